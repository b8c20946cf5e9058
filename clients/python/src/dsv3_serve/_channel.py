"""Channel options shared by Client and AsyncClient."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import grpc

Metadata = Sequence[Tuple[str, str]]


def credentials(tls: bool, root_certificates: Optional[bytes],
                private_key: Optional[bytes],
                certificate_chain: Optional[bytes]) -> Optional[grpc.ChannelCredentials]:
    """None for plaintext; TLS with the system's roots, or root_certificates (PEM), and a client
    certificate for mutual TLS."""
    if not (tls or root_certificates or certificate_chain):
        return None
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("private_key and certificate_chain go together")
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def metadata(api_key: Optional[str]) -> Optional[Metadata]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else None
