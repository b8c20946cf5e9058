#include "server/tls_check.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dsv3::server {
namespace {

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Cert = std::unique_ptr<X509, decltype(&X509_free)>;
using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
}

// Refuses to prompt on the terminal for the passphrase of an encrypted key (gRPC cannot use one).
int NoPassphrase(char*, int, int, void*) { return 0; }

Cert FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  return Cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr) : nullptr,
              X509_free);
}

absl::Status Invalid(const char* flag, const std::string& path, absl::string_view what) {
  // OpenSSL queues its reasons per thread; leave nothing behind for gRPC to misreport later.
  ERR_clear_error();
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", what));
}

}  // namespace

absl::Status CheckTlsPem(const TlsPem& pem, const std::string& cert_path,
                         const std::string& key_path, const std::string& client_ca_path) {
  Cert cert = FirstCertificate(pem.cert_chain);
  if (!cert) return Invalid("--tls-cert", cert_path, "holds no PEM certificate");
  Bio key_bio = MemoryBio(pem.key);
  Key key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr)
                  : nullptr,
          EVP_PKEY_free);
  if (!key) return Invalid("--tls-key", key_path, "holds no unencrypted PEM private key");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return Invalid("--tls-key", key_path,
                   absl::StrCat("is not the key of the certificate in --tls-cert ", cert_path));
  }
  if (!pem.client_ca.empty() || !client_ca_path.empty()) {
    if (!FirstCertificate(pem.client_ca)) {
      return Invalid("--tls-client-ca", client_ca_path, "holds no PEM certificate");
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3::server
