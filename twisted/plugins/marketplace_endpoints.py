"""The C{reuseport:} server endpoint descriptions of the daemons' worker
processes (marketplace/frame/reuseport.py)."""

from marketplace.frame.reuseport import ReusePortParser

reuseport = ReusePortParser()
