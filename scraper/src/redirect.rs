//! Which redirects the fetcher follows: only within the marketplace's origin (the scheme, host and
//! port of `scraper.base_url`), only to paths robots.txt allows, and at most [`MAX_REDIRECTS`] in
//! a row. Any other redirect stops the request before its target is fetched.

use reqwest::Url;
use reqwest::redirect::Policy;

use crate::robots::Robots;

/// The longest chain of redirects followed (RFC 9309 asks at least five for robots.txt).
pub const MAX_REDIRECTS: usize = 5;

/// Why a redirect is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The target is on another origin: never fetched.
    #[error("to {location}, off the marketplace ({origin})")]
    OffSite {
        /// The redirect's target.
        location: String,
        /// The marketplace's origin.
        origin: String,
    },
    /// robots.txt disallows the target's path.
    #[error("to {path}, which robots.txt disallows")]
    Disallowed {
        /// The target's path and query.
        path: String,
    },
    /// The chain is longer than [`MAX_REDIRECTS`].
    #[error("more than {MAX_REDIRECTS} times in a row")]
    TooMany,
}

/// Whether a redirect to `target`, the chain having made `requests` requests so far, may be
/// followed from `origin`'s marketplace under `robots` (none while robots.txt itself is read).
///
/// # Errors
/// [`Refused`], saying why not.
pub fn check(
    origin: &Url,
    robots: Option<&Robots>,
    target: &Url,
    requests: usize,
) -> Result<(), Refused> {
    if target.origin() != origin.origin() {
        return Err(Refused::OffSite {
            location: target.to_string(),
            origin: origin.origin().ascii_serialization(),
        });
    }
    let path = match target.query() {
        Some(query) => format!("{}?{query}", target.path()),
        None => target.path().to_owned(),
    };
    if robots.is_some_and(|robots| !robots.allows(&path)) {
        return Err(Refused::Disallowed { path });
    }
    if requests > MAX_REDIRECTS {
        return Err(Refused::TooMany);
    }
    Ok(())
}

/// The HTTP client's redirect policy: [`check`] before every hop.
pub fn policy(origin: Url, robots: Option<Robots>) -> Policy {
    Policy::custom(move |attempt| {
        match check(
            &origin,
            robots.as_ref(),
            attempt.url(),
            attempt.previous().len(),
        ) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// The refusal that stopped a request, if a redirect was refused.
pub fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn only_the_marketplace_s_own_origin_is_followed() {
        let origin = url("https://web.joongna.com");
        let ok = |target: &str| check(&origin, None, &url(target), 1);
        assert_eq!(ok("https://web.joongna.com/product/2"), Ok(()));
        assert_eq!(ok("https://WEB.joongna.com:443/product/2?x=1"), Ok(()));
        for elsewhere in [
            "https://evil.example/product/2",
            "http://web.joongna.com/product/2",
            "https://web.joongna.com:8443/product/2",
            "https://joongna.com/product/2",
            "https://web.joongna.com.evil.example/",
            "https://web.joongna.com@evil.example/",
            "file:///etc/passwd",
            "data:text/html,hi",
        ] {
            assert!(
                matches!(ok(elsewhere), Err(Refused::OffSite { .. })),
                "{elsewhere}: {:?}",
                ok(elsewhere)
            );
        }
    }

    #[test]
    fn robots_rules_and_the_chain_length_apply_to_the_target() {
        let origin = url("http://127.0.0.1:18080");
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /private\n",
            "marketflow-scraper/1",
        );
        let target = url("http://127.0.0.1:18080/private/2?a=b");
        assert_eq!(
            check(&origin, Some(&robots), &target, 1),
            Err(Refused::Disallowed {
                path: "/private/2?a=b".into()
            })
        );
        let product = url("http://127.0.0.1:18080/product/2");
        assert_eq!(check(&origin, Some(&robots), &product, 1), Ok(()));
        assert_eq!(
            check(&origin, Some(&robots), &product, MAX_REDIRECTS),
            Ok(())
        );
        assert_eq!(
            check(&origin, Some(&robots), &product, MAX_REDIRECTS + 1),
            Err(Refused::TooMany)
        );
    }
}
