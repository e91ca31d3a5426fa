//! Azure Storage credentials: connection strings, Shared Key signing, SAS tokens.
//!
//! Shared Key signing follows "Authorize with Shared Key" of the Azure Storage REST API
//! (service version 2015-02-21 and later): the string to sign is the verb, eleven standard
//! headers (Content-Length empty when zero), the canonicalized `x-ms-*` headers and the
//! canonicalized resource, signed with HMAC-SHA256 under the base64-decoded account key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The well-known account of the Azure Storage emulator (Azurite). Public, not a secret.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of [`DEV_ACCOUNT`]. Public, not a secret.
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Why credentials were refused. The texts never quote the connection string or the key: a
/// malformed part is named by its position, a bad key by what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A connection string part (counted from 1, parts separated by `;`) is not `Key=Value`.
    #[error("malformed connection string part {0}: expected Key=Value")]
    Malformed(usize),
    /// Something needed is missing.
    #[error("the connection string has no {0}")]
    Missing(&'static str),
    /// The account key is not base64; what is wrong with it (never its text).
    #[error("the account key is not valid base64: {0}")]
    Key(String),
}

/// How requests are authorised.
#[derive(Clone)]
pub enum Credentials {
    /// Shared Key: requests are signed with the account key.
    SharedKey {
        /// The storage account.
        account: String,
        /// The decoded account key.
        key: Vec<u8>,
    },
    /// A shared access signature appended to every request's query.
    Sas(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .finish_non_exhaustive(),
            Self::Sas(_) => f.write_str("Sas(..)"),
        }
    }
}

impl Credentials {
    /// Shared Key credentials from an account name and its base64 key.
    pub fn shared_key(account: &str, key_base64: &str) -> Result<Self, CredentialsError> {
        let key = BASE64
            .decode(key_base64.trim())
            .map_err(|e| CredentialsError::Key(key_problem(&e)))?;
        if account.is_empty() {
            return Err(CredentialsError::Missing("AccountName"));
        }
        Ok(Self::SharedKey {
            account: account.to_owned(),
            key,
        })
    }
}

/// What is wrong with a base64 key, without the offending character (base64's own message
/// quotes it, and it is part of the key).
fn key_problem(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("a character that is not base64 at position {offset}")
        }
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("an invalid last character at position {offset}")
        }
        base64::DecodeError::InvalidLength(_) => "its length is not that of base64".into(),
        base64::DecodeError::InvalidPadding => "invalid padding".into(),
    }
}

/// A parsed connection string: where the blob service is and how to authorise.
#[derive(Debug, Clone)]
pub struct ConnectionString {
    /// The blob service endpoint, without a trailing slash.
    pub blob_endpoint: String,
    /// The credentials.
    pub credentials: Credentials,
}

impl ConnectionString {
    /// Parses `Key=Value;...` as the Azure portal and Azurite print it. Supports
    /// `UseDevelopmentStorage=true`, `AccountName` + `AccountKey` (with `BlobEndpoint`, or
    /// `DefaultEndpointsProtocol` + `EndpointSuffix`), and `BlobEndpoint` +
    /// `SharedAccessSignature`.
    pub fn parse(s: &str) -> Result<Self, CredentialsError> {
        let mut parts = std::collections::BTreeMap::new();
        let parts_given = s.split(';').map(str::trim).filter(|p| !p.is_empty());
        for (i, part) in parts_given.enumerate() {
            let (k, v) = part
                .split_once('=')
                .ok_or(CredentialsError::Malformed(i + 1))?;
            parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let get = |k: &str| parts.get(k).map(String::as_str);
        if get("usedevelopmentstorage") == Some("true") {
            return Ok(Self {
                blob_endpoint: format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"),
                credentials: Credentials::shared_key(DEV_ACCOUNT, DEV_KEY)?,
            });
        }
        let account = get("accountname");
        let blob_endpoint = match (get("blobendpoint"), account) {
            (Some(e), _) => e.trim_end_matches('/').to_owned(),
            (None, Some(account)) => format!(
                "{}://{account}.blob.{}",
                get("defaultendpointsprotocol").unwrap_or("https"),
                get("endpointsuffix").unwrap_or("core.windows.net")
            ),
            (None, None) => return Err(CredentialsError::Missing("BlobEndpoint or AccountName")),
        };
        let credentials = match (get("sharedaccesssignature"), account, get("accountkey")) {
            (Some(sas), _, _) => Credentials::Sas(sas.trim_start_matches('?').to_owned()),
            (None, Some(account), Some(key)) => Credentials::shared_key(account, key)?,
            (None, None, _) => return Err(CredentialsError::Missing("AccountName")),
            (None, Some(_), None) => {
                return Err(CredentialsError::Missing(
                    "AccountKey or SharedAccessSignature",
                ));
            }
        };
        Ok(Self {
            blob_endpoint,
            credentials,
        })
    }
}

/// What a request looks like to the signer.
#[derive(Debug)]
pub struct ToSign<'a> {
    /// GET, PUT, ...
    pub verb: &'a str,
    /// The URL path as sent (percent-encoded).
    pub path: &'a str,
    /// Query parameters, as sent.
    pub query: &'a [(&'a str, &'a str)],
    /// Standard headers by lowercase name (content-length, content-type, if-match, ...).
    pub headers: &'a [(&'a str, &'a str)],
    /// `x-ms-*` headers by lowercase name.
    pub ms_headers: &'a [(&'a str, &'a str)],
}

/// The Shared Key string to sign.
pub fn string_to_sign(account: &str, r: &ToSign<'_>) -> String {
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| *v)
    };
    let content_length = match header("content-length") {
        "0" => "",
        other => other,
    };
    let mut s = String::with_capacity(256);
    for line in [
        r.verb,
        header("content-encoding"),
        header("content-language"),
        content_length,
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        s.push_str(line);
        s.push('\n');
    }
    let mut ms: Vec<_> = r.ms_headers.to_vec();
    ms.sort_unstable();
    for (name, value) in ms {
        s.push_str(name);
        s.push(':');
        s.push_str(value.trim());
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(r.path);
    let mut query: Vec<(String, &str)> = r
        .query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    query.sort_unstable();
    for (name, value) in query {
        s.push('\n');
        s.push_str(&name);
        s.push(':');
        s.push_str(value);
    }
    s
}

/// The `Authorization` header value for `r`.
pub fn authorization(account: &str, key: &[u8], r: &ToSign<'_>) -> String {
    #[allow(clippy::expect_used)] // reason: HMAC accepts keys of any length; this cannot fail
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(string_to_sign(account, r).as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_of_every_supported_shape() {
        let dev =
            ConnectionString::parse("UseDevelopmentStorage=true").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dev.blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        let azurite = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
             BlobEndpoint=http://127.0.0.1:21000/devstoreaccount1/;"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            azurite.blob_endpoint,
            "http://127.0.0.1:21000/devstoreaccount1"
        );
        assert!(matches!(azurite.credentials, Credentials::SharedKey { .. }));
        let cloud = ConnectionString::parse(&format!("AccountName=acme;AccountKey={DEV_KEY}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cloud.blob_endpoint, "https://acme.blob.core.windows.net");
        let sas = ConnectionString::parse(
            "BlobEndpoint=https://acme.blob.core.windows.net;SharedAccessSignature=?sv=2023&sig=x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(sas.credentials, Credentials::Sas(ref s) if s == "sv=2023&sig=x"));

        assert!(matches!(
            ConnectionString::parse("AccountName=acme;AccountKey=not base64!"),
            Err(CredentialsError::Key(_))
        ));
        assert!(matches!(
            ConnectionString::parse("AccountName=acme"),
            Err(CredentialsError::Missing(_))
        ));
        assert!(matches!(
            ConnectionString::parse("garbage"),
            Err(CredentialsError::Malformed(_))
        ));
    }

    #[test]
    fn refused_connection_strings_are_not_quoted() {
        let err = ConnectionString::parse("AccountName=acme;Secretive9Key;AccountKey=x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("part 2") && !err.contains("Secretive9Key"),
            "{err}"
        );
        for key in ["Zm9v!YmFy", "Zm9vYm=Fy", "Zm9vY"] {
            let err = ConnectionString::parse(&format!("AccountName=acme;AccountKey={key}"))
                .err()
                .map(|e| format!("{e} {e:?}"))
                .unwrap_or_default();
            assert!(err.contains("not valid base64"), "{err}");
            assert!(!err.contains(key) && !err.contains('!'), "{err}");
        }
        let sas = ConnectionString::parse(
            "BlobEndpoint=https://acme.blob.core.windows.net;SharedAccessSignature=sv=1&sig=Hush1",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{sas:?}").contains("Hush1"));
        let key = ConnectionString::parse(&format!("AccountName=acme;AccountKey={DEV_KEY}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{key:?}").contains("Eby8"));
    }

    #[test]
    fn the_string_to_sign_has_the_documented_shape() {
        let s = string_to_sign(
            "acct",
            &ToSign {
                verb: "PUT",
                path: "/acct/leases/shard-1",
                query: &[("Timeout", "6")],
                headers: &[
                    ("content-length", "0"),
                    ("if-match", "\"0x1\""),
                    ("content-type", "application/json"),
                ],
                ms_headers: &[
                    ("x-ms-version", "2023-11-03"),
                    ("x-ms-date", "Tue, 24 Nov 2026 10:00:00 GMT"),
                ],
            },
        );
        assert_eq!(
            s,
            "PUT\n\n\n\n\napplication/json\n\n\n\"0x1\"\n\n\n\n\
             x-ms-date:Tue, 24 Nov 2026 10:00:00 GMT\nx-ms-version:2023-11-03\n\
             /acct/acct/leases/shard-1\ntimeout:6"
        );
    }
}
