"""marketplace-bench: a closed-loop load generator and its reports.

L{workloads} says what each client calls, L{runner} drives the clients (on
the client library, one connection each, all in one reactor), L{stats}
turns the timings into figures and L{report} into Markdown, a chart and
JSON.  L{cli} is the console command; L{memory} measures what idle
connections cost a service.
"""
