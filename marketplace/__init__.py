"""Marketplace: an online marketplace backend of Twisted services on PostgreSQL."""
