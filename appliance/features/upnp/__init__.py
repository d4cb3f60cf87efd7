"""Reachability from the internet: UPnP port mappings on the home router and their renewal
timer, and the reachability verdict."""
