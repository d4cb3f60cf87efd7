"""rspamd as Postfix's milter: DKIM signing, SPF/DKIM/DMARC checks, spam scoring, and
reporting spam (ARF)."""
