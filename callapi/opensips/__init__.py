"""
Everything that speaks to the OpenSIPS proxy: the MI client
(L{callapi.opensips.mi}), EVI events and their subscriptions
(L{callapi.opensips.events}), the MI command names of the proxy's version
(L{callapi.opensips.names}), datagram addresses
(L{callapi.opensips.addresses}) and the service that owns the sockets
(L{callapi.opensips.service}).

This package never imports L{callapi.scenarios} nor the API layers
(L{callapi.rpc}, L{callapi.ws}).
"""
