"""The box's self-defence, four features: the firewall (nftables, tuned to the detected LAN),
fail2ban, SSH (keys only), and the outbound limits (the policy service)."""
