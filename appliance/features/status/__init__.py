"""`appliance status` and the daily status mail."""
