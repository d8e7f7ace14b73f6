"""Atelier: an open-source AI platform for fashion retail and production.

The import package ``atelier`` is this folder: ``atelier.runtime`` is the one server runtime,
``atelier.<service>`` is one capability, ``atelier.<service>.v1`` its generated contract.
"""

__version__ = "0.1.0"
