"""A real authoritative DNS server on loopback, lab zones, and DNS-backed auth checks.

Modules
    ``authority``  answers one query from a set of zones (wire in, wire out; no sockets)
    ``server``     ``DnsServer``: that authority behind UDP and TCP on one 127.0.0.0/8 port
    ``zone``       the zone of a lab config (DKIM keys, SPF, DMARC, MX, SOA/NS)
    ``spf``        RFC 7208 ``check_host`` over an injected lookup function
    ``auth``       ``DnsAuth``: a dnspython resolver aimed at one server, with a TTL cache,
                   giving ``dkim_dnsfunc``, ``spf``, ``dmarc`` and ``aligned``

Nothing here is imported by ``engine``; the sandbox may use ``auth`` when its config
names a DNS server.
"""
