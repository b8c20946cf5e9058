// Checks the server's TLS material before gRPC sees it. gRPC only logs a certificate or key it
// cannot use and then fails to start without a reason the daemon could report; checked here,
// the error names the flag and the file.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace dsv3::server {

struct TlsPem {
  std::string cert_chain;  // --tls-cert: one or more PEM certificates, the server's first
  std::string key;         // --tls-key: the unencrypted PEM private key of the first certificate
  std::string client_ca;   // --tls-client-ca: one or more PEM certificates; empty: no mTLS
};

// InvalidArgument "--tls-cert FILE: ..." (or --tls-key, --tls-client-ca) when a file holds no
// usable PEM object or the key does not belong to the certificate. `*_path` name the files.
absl::Status CheckTlsPem(const TlsPem& pem, const std::string& cert_path,
                         const std::string& key_path, const std::string& client_ca_path);

}  // namespace dsv3::server
