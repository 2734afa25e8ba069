"""The alerter: consume alert events and notify people by email over SMTP."""
