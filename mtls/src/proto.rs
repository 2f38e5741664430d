//! The messages of Istio's CA service, `security/v1alpha1/ca.proto` in `istio/api`:
//!
//! ```proto
//! package istio.v1.auth;
//! message IstioCertificateRequest {
//!   string csr = 1;                       // PEM CSR
//!   int64 validity_duration = 3;          // seconds (field 2 is unused)
//!   google.protobuf.Struct metadata = 4;  // keys used: "CertSigner", "ImpersonatedIdentity"
//! }
//! message IstioCertificateResponse {
//!   repeated string cert_chain = 1;       // leaf first, root(s) last
//! }
//! service IstioCertificateService {
//!   rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse) {}
//! }
//! ```
//!
//! Written by hand with `prost`'s derive (there is no `protoc` to generate them), which is what
//! `prost-build` would emit for these three messages.

/// The gRPC method path of `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// `istio.v1.auth.IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// The PEM-encoded certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; 0 or less means istiod's default (24 h).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Opaque metadata (`CertSigner`, `ImpersonatedIdentity`); unset here.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `istio.v1.auth.IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// The leaf first, then every certificate of istiod's `cert-chain.pem` one per element,
    /// then the whole `root-cert.pem` (possibly several roots) as the last element.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost::Message;

    #[test]
    fn request_encoding_matches_the_proto_wire_format() {
        let req = IstioCertificateRequest {
            csr: "ab".into(),
            validity_duration: 300,
            metadata: None,
        };
        // field 1, wire type 2 (len) = 0x0a; field 3, wire type 0 (varint) = 0x18; 300 = ac 02
        assert_eq!(
            req.encode_to_vec(),
            vec![0x0a, 2, b'a', b'b', 0x18, 0xac, 0x02]
        );
    }

    #[test]
    fn response_decodes_repeated_strings() {
        let bytes = [0x0a, 1, b'x', 0x0a, 2, b'y', b'z', 0x7a, 0]; // + unknown field 15
        let resp = IstioCertificateResponse::decode(&bytes[..]).unwrap();
        assert_eq!(resp.cert_chain, vec!["x".to_owned(), "yz".to_owned()]);
    }
}
