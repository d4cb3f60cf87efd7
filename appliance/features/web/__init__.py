"""The small HTTPS server (nginx): the MTA-STS policy and the Web Key Directory."""
