"""The gateway's SMTP listeners on aiosmtpd: inbound (bounces, complaints, mailto refusals)
now, submission (applications sending through the gateway) next. `server` holds the SMTP
protocol and the listener they share."""

from .inbound import Handler, InboundServer, parse_hostport

__all__ = ["Handler", "InboundServer", "parse_hostport"]
