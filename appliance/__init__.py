"""mail-appliance: the on-box agent.

core/        what every feature uses (settings primitives, facts, plan, apply, the pipeline)
features/    one folder per capability (mail, relay, upnp, certs, web, openpgp, firewall,
             ssh, fail2ban, limits, privacy, spam, dns, status)
registry.py  the ordered list of features: the only one
cli.py       the `appliance` command, thin: the registry's verbs -> the pipeline or a feature
templates/   one Jinja2 template per config file, paths mirroring /etc
"""

__version__ = "0.1.0"
