"""Let's Encrypt (or another ACME CA) through certbot; `appliance cert`, and for now the
`dns` and `dkim` verbs that read the certificate's TLSA record."""
