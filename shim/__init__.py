"""shim: a secret sidecar for serverless functions.

Data flows one way: request in -> identity -> bindings -> fetch -> deliver -> forward -> respond.
The core (``shim.names``, ``shim.store.base``, ``shim.sidecar``) knows no backend and no platform;
backends live in ``shim.store.<backend>`` and are chosen by the store URL.
"""

__version__ = "0.1.0"
