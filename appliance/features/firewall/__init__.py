"""The firewall: nftables rules tuned to the detected LAN, and the LAN's extra trusted networks."""
