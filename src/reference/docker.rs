//! Docker image names: the distribution reference grammar and the docker CLI's
//! normalization (`alpine` → `docker.io/library/alpine:latest`).

use std::fmt;

use super::ParseError;
use crate::digest::Digest;

/// The registry that names without a host refer to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a name has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker Hub's namespace for official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// distribution/reference: a repository name (with host) is at most 255 characters.
const MAX_NAME_LEN: usize = 255;
/// distribution/reference: `[\w][\w.-]{0,127}`.
const MAX_TAG_LEN: usize = 128;

/// A normalized registry image name: host, repository, and tag and/or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DockerRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl DockerRef {
    /// Parses `[HOST[:PORT]/]REPO[:TAG][@sha256:HEX]` and normalizes it like the docker CLI.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let bad = |part: &str, why: &str| ParseError::new(input, part, why);
        if input.is_empty() {
            return Err(bad("", "the image name is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|e| bad(d, &e.to_string()))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|why| bad(tag, why))?;
        }
        let (registry, path) = split_registry(name);
        if let Some(host) = registry {
            validate_host(host).map_err(|why| bad(host, why))?;
        }
        if path.is_empty() {
            return Err(bad(name, "the repository name is empty"));
        }
        for component in path.split('/') {
            validate_component(component).map_err(|why| bad(component, why))?;
        }
        let registry = match registry {
            None | Some("index.docker.io") => DEFAULT_REGISTRY.to_owned(),
            Some(h) => h.to_owned(),
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_owned()
        };
        // The distribution limit counts the normalized name, as docker does.
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad(name, "the image name with its registry is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self { registry, repository, tag, digest })
    }

    /// The registry host (and port), e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path within the registry, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (`latest` is filled in when neither tag nor digest is given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest the reference pins, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The short name docker prints (`alpine`, `user/app`, `localhost:5000/app`), no tag.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_owned()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }
}

impl fmt::Display for DockerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The first component is a host if it has a '.' or ':' or is `localhost`
/// (the docker CLI's rule), or contains upper case (which repositories never do).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_host(host: &str) -> Result<(), &'static str> {
    // An IPv6 literal is bracketed, and only what follows its ']' can be a port.
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) if host.len() == end + 1 => (host, None),
            Some(end) => match host[end + 1..].strip_prefix(':') {
                Some(port) => (&host[..=end], Some(port)),
                None => return Err("the registry host is not a valid host name"),
            },
            None => return Err("the registry host is not a valid host name"),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
            return Err("the registry port is not a number");
        }
    }
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return if literal.parse::<std::net::Ipv6Addr>().is_ok() {
            Ok(())
        } else {
            Err("the registry host is not a valid IPv6 address")
        };
    }
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if labels_ok {
        Ok(())
    } else {
        Err("the registry host is not a valid host name")
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("a repository path component is empty");
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository names must be lower case");
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("a repository path component must start and end with a letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err("a repository path component has an invalid separator (allowed: '.', '_', '__', '-')");
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if tag.is_empty() {
        return Err("the tag is empty");
    }
    if tag.len() > MAX_TAG_LEN {
        return Err("the tag is longer than 128 characters");
    }
    if !word(bytes[0]) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err("the tag may hold only letters, digits, '_', '.', '-' and must not start with '.' or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalizes_like_docker() {
        let cases: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.19", "docker.io/library/alpine:3.19"),
            ("docker.io/library/alpine:latest", "docker.io/library/alpine:latest"),
            ("index.docker.io/alpine", "docker.io/library/alpine:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
            ("quay.io/org/app_x__y.z-w---v", "quay.io/org/app_x__y.z-w---v:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(DockerRef::parse(input).unwrap().to_string(), *want, "{input}");
        }
        let r = DockerRef::parse(&format!("localhost:5000/a@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.reference(), D);
        let r = DockerRef::parse(&format!("a:t@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/a:t@{D}"));
        assert_eq!(r.familiar_name(), "a");
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("Alpine", "Alpine"),
            ("alpine:", ""),
            ("alpine:-x", "-x"),
            ("a//b", ""),
            ("a/-b", "-b"),
            ("a@sha256:zz", "sha256:zz"),
            ("a@md5:abcd", "md5:abcd"),
            ("bad_host:99999/x", "bad_host:99999"),
            ("a..b", "a..b"),
        ];
        for (input, part) in cases {
            let err = DockerRef::parse(input).unwrap_err();
            assert_eq!(err.part(), *part, "{input}: {err}");
        }
    }

    #[test]
    fn the_length_limit_counts_the_normalized_name() {
        let at_limit = "a".repeat(255 - "docker.io/library/".len());
        assert!(DockerRef::parse(&at_limit).is_ok());
        let err = DockerRef::parse(&format!("{at_limit}b")).unwrap_err();
        assert!(err.to_string().contains("255"), "{err}");
        assert!(DockerRef::parse(&format!("localhost/{}", "a".repeat(245))).is_ok());
    }

    #[test]
    fn ipv6_registries_with_and_without_a_port() {
        assert_eq!(DockerRef::parse("[::1]:5000/app").unwrap().registry(), "[::1]:5000");
        assert_eq!(DockerRef::parse("[fe80::1]/a/b:v1").unwrap().to_string(), "[fe80::1]/a/b:v1");
        for bad in ["[::1/app", "[::1]x/app", "[zz::1]/app", "[::1]:/app", "[::1]:70000/app"] {
            assert!(DockerRef::parse(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
        fn component() -> impl Strategy<Value = String> {
            let alnum = "[a-z0-9]{1,6}";
            let separator = prop_oneof![Just(".".to_owned()), Just("_".to_owned()), Just("__".to_owned()), "-{1,3}"];
            (alnum, prop::collection::vec((separator, alnum), 0..3)).prop_map(|(first, rest)| {
                rest.into_iter().fold(first, |mut acc, (sep, part)| {
                    acc.push_str(&sep);
                    acc.push_str(&part);
                    acc
                })
            })
        }

        fn host() -> impl Strategy<Value = String> {
            let port = prop::option::of(1u16..);
            let name = prop_oneof![
                Just("localhost".to_owned()),
                "[a-z0-9]{1,8}(-[a-z0-9]{1,4})?(\\.[a-z0-9]{1,8}){1,3}",
                (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
                    .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
                any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
            ];
            (name, port).prop_map(|(name, port)| match port {
                Some(port) => format!("{name}:{port}"),
                None => name,
            })
        }

        fn tag() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}"
        }

        fn digest() -> impl Strategy<Value = Digest> {
            any::<[u8; 32]>().prop_map(|bytes| Digest::from_sha256_bytes(&bytes))
        }

        proptest! {
            /// Every name the grammar allows parses to its parts, and the normalized
            /// form parses back to the same reference.
            #[test]
            fn grammar_names_parse_and_round_trip(
                host in prop::option::of(host()),
                path in prop::collection::vec(component(), 1..4),
                tag in prop::option::of(tag()),
                digest in prop::option::of(digest()),
            ) {
                // Without a host, a first component that looks like one is one.
                prop_assume!(host.is_some() || !(path[0].contains('.') || path[0] == "localhost"));
                let path = path.join("/");
                let mut input = host.as_ref().map(|h| format!("{h}/{path}")).unwrap_or_else(|| path.clone());
                if let Some(tag) = &tag {
                    input = format!("{input}:{tag}");
                }
                if let Some(digest) = &digest {
                    input = format!("{input}@{digest}");
                }
                let parsed = DockerRef::parse(&input).map_err(|e| TestCaseError::fail(format!("{input}: {e}")))?;
                match &host {
                    Some(h) if h != "index.docker.io" => prop_assert_eq!(parsed.registry(), h.as_str()),
                    _ => prop_assert_eq!(parsed.registry(), DEFAULT_REGISTRY),
                }
                prop_assert!(parsed.repository().ends_with(&path));
                prop_assert_eq!(parsed.digest(), digest.as_ref());
                match (&tag, &digest) {
                    (Some(t), _) => prop_assert_eq!(parsed.tag(), Some(t.as_str())),
                    (None, None) => prop_assert_eq!(parsed.tag(), Some(DEFAULT_TAG)),
                    (None, Some(_)) => prop_assert_eq!(parsed.tag(), None),
                }
                let again = DockerRef::parse(&parsed.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&again, &parsed);
            }

            /// Whatever the input, parsing returns (never panics), and what it accepts
            /// is a fixed point of normalization.
            #[test]
            fn any_input_parses_or_is_refused(input in ".{0,80}|[a-zA-Z0-9:/@._\\[\\]-]{0,80}") {
                if let Ok(parsed) = DockerRef::parse(&input) {
                    let shown = parsed.to_string();
                    let again = DockerRef::parse(&shown).map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?;
                    prop_assert_eq!(again.to_string(), shown);
                }
            }
        }
    }
}
