"""The SMTP front door: port 25 (MX) and submission (587 STARTTLS, 465 TLS)."""
