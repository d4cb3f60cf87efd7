"""The LAN console: the box's web pages, for people who never use SSH.

It is one more client of the core pipeline, like the `appliance` command, and it is built so
that a compromised web process cannot do more than a logged-in person could:

    browser --HTTPS:8443 (LAN only)--> nginx --unix socket--> web.py (Flask, waitress)
                                                              user appliance-console
                                                                |
                                   JSON lines, named operations |  /run/appliance-console/agent.sock
                                                                v
                                                   agent.py (root): sessions, passwords,
                                                   each edit an `appliance` verb (a child)

- web.py renders pages and holds no secret: no settings file, no password hash, no key. Each
  request carries the browser's session token to the agent, which decides what it may do.
- agent.py is the only privileged part. It knows a fixed list of operations (protocol.OPS);
  each edit is the same `appliance` verb the CLI runs (same checks, same error text, same lock),
  so the console and the settings file cannot disagree.
- Both start on demand (systemd socket activation) and exit when idle: the console is used
  minutes a month and should hold no memory between visits.
- Before the box has an administrator, the only page is the setup wizard, and only for a
  browser that types the setup code printed in appliance-setup.txt on the card (setup.py).
"""
