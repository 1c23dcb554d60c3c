//! robots.txt (RFC 9309): the rules of the group that names our product token, else of `*`;
//! the longest matching rule wins, `Allow` on a tie; `Crawl-delay` lowers the request rate, within
//! a sane range whatever number the file holds.

use std::time::Duration;

/// The rules that apply to this crawler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Robots {
    rules: Vec<(bool, String)>,
    /// Seconds, as written: the file is not ours, so this may be NaN, negative or 1e30.
    crawl_delay: Option<f64>,
}

/// A `Crawl-delay` as robots.txt wrote it, and the delay honoured for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrawlDelay {
    /// Seconds as written.
    pub asked: f64,
    /// The delay kept: `asked` within `0..=max`, where NaN counts as no delay.
    pub honoured: Duration,
    /// Whether `asked` was out of range (NaN, negative, or above `max`).
    pub clamped: bool,
}

impl CrawlDelay {
    /// The delay honoured for a `Crawl-delay: asked` when the longest honoured is `max`.
    pub fn new(asked: f64, max: Duration) -> Self {
        let (honoured, clamped) = if asked.is_nan() || asked < 0.0 {
            (Duration::ZERO, true)
        } else if asked > max.as_secs_f64() {
            (max, true)
        } else {
            // Finite and at most `max` here; `max` is the bound should rounding disagree.
            (Duration::try_from_secs_f64(asked).unwrap_or(max), false)
        };
        Self {
            asked,
            honoured,
            clamped,
        }
    }
}

impl Robots {
    /// No rules: everything is allowed (robots.txt absent, i.e. 4xx).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Everything disallowed (robots.txt unreachable with a 5xx, per RFC 9309).
    pub fn disallow_all() -> Self {
        Self {
            rules: vec![(false, "/".to_owned())],
            crawl_delay: None,
        }
    }

    /// The rules of `text` for the crawler whose User-Agent is `user_agent` (its product token,
    /// the part before `/`, is matched case-insensitively).
    pub fn parse(text: &str, user_agent: &str) -> Self {
        let token = user_agent
            .split(['/', ' '])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut groups: Vec<(Vec<String>, Self)> = Vec::new();
        let mut in_agents = false;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let (field, value) = (field.trim().to_ascii_lowercase(), value.trim());
            match field.as_str() {
                "user-agent" => {
                    if !in_agents {
                        groups.push((Vec::new(), Self::default()));
                    }
                    in_agents = true;
                    if let Some((agents, _)) = groups.last_mut() {
                        agents.push(value.to_ascii_lowercase());
                    }
                }
                "allow" | "disallow" | "crawl-delay" => {
                    in_agents = false;
                    let Some((_, group)) = groups.last_mut() else {
                        continue;
                    };
                    if field == "crawl-delay" {
                        group.crawl_delay = value.parse::<f64>().ok();
                    } else if !value.is_empty() {
                        group.rules.push((field == "allow", value.to_owned()));
                    }
                }
                _ => {}
            }
        }
        let mine = groups
            .iter()
            .find(|(agents, _)| !token.is_empty() && agents.contains(&token));
        let any = groups
            .iter()
            .find(|(agents, _)| agents.iter().any(|a| a == "*"));
        mine.or(any).map(|(_, g)| g.clone()).unwrap_or_default()
    }

    /// Whether `path` (with its query) may be fetched.
    pub fn allows(&self, path: &str) -> bool {
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if let Some(len) = matches(pattern, path) {
                let better = match best {
                    None => true,
                    Some((l, a)) => len > l || (len == l && *allow && !a),
                };
                if better {
                    best = Some((len, *allow));
                }
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }

    /// The delay robots.txt asks between requests, if any, and the one honoured when the longest
    /// honoured is `max`.
    pub fn crawl_delay(&self, max: Duration) -> Option<CrawlDelay> {
        self.crawl_delay.map(|asked| CrawlDelay::new(asked, max))
    }
}

/// The pattern's length when it matches the start of `path` (`*` any run, `$` the end).
fn matches(pattern: &str, path: &str) -> Option<usize> {
    let (pattern_body, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern_body.split('*').collect();
    let mut rest = path;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            rest = rest.strip_prefix(part)?;
        } else {
            let at = rest.find(part)?;
            rest = &rest[at + part.len()..];
        }
    }
    if anchored && !rest.is_empty() && !pattern_body.ends_with('*') {
        return None;
    }
    Some(pattern.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UA: &str = "marketflow-scraper/0.1 (+https://example.invalid)";

    #[test]
    fn the_market_allows_products_and_hides_the_truth() {
        let robots = Robots::parse("User-agent: *\nAllow: /\nDisallow: /__truth\n", UA);
        assert!(robots.allows("/product/123"));
        assert!(robots.allows("/product/list?type=recent"));
        assert!(!robots.allows("/__truth/5"));
    }

    #[test]
    fn our_own_group_wins_over_the_star_group() {
        let text = "User-agent: *\nDisallow: /\n\nUser-agent: Marketflow-Scraper\nAllow: /product/\nDisallow: /\nCrawl-delay: 2\n";
        let robots = Robots::parse(text, UA);
        assert!(robots.allows("/product/1"));
        assert!(!robots.allows("/search"));
        let delay = robots.crawl_delay(Duration::from_secs(60)).unwrap();
        assert_eq!(delay.honoured, Duration::from_secs(2));
        assert!(!delay.clamped);
        assert!(!Robots::parse(text, "other-bot/1").allows("/product/1"));
    }

    #[test]
    fn the_longest_rule_wins_and_allow_wins_ties() {
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /product\nAllow: /product/\nDisallow: /product/*.json$\n",
            UA,
        );
        assert!(robots.allows("/product/9"));
        assert!(!robots.allows("/products"));
        assert!(!robots.allows("/product/9/data.json"));
        assert!(robots.allows("/product/9/data.json?x=1"));
    }

    #[test]
    fn empty_absent_and_unreachable() {
        assert!(Robots::parse("", UA).allows("/anything"));
        assert!(Robots::allow_all().allows("/"));
        assert!(!Robots::disallow_all().allows("/product/1"));
        assert!(Robots::parse("User-agent: *\nDisallow:\n", UA).allows("/x"));
    }

    #[test]
    fn an_absurd_crawl_delay_is_clamped_into_range() {
        let max = Duration::from_secs(60);
        let honoured = |value: &str| {
            let text = format!("User-agent: *\nCrawl-delay: {value}\n");
            let delay = Robots::parse(&text, UA).crawl_delay(max);
            delay.map(|d| (d.honoured, d.clamped))
        };
        assert_eq!(honoured("1e30"), Some((max, true)));
        assert_eq!(honoured("inf"), Some((max, true)));
        assert_eq!(honoured("1e300"), Some((max, true)));
        assert_eq!(honoured("61"), Some((max, true)));
        assert_eq!(honoured("NaN"), Some((Duration::ZERO, true)));
        assert_eq!(honoured("-5"), Some((Duration::ZERO, true)));
        assert_eq!(honoured("-inf"), Some((Duration::ZERO, true)));
        assert_eq!(honoured("0.5"), Some((Duration::from_millis(500), false)));
        assert_eq!(honoured("60"), Some((max, false)));
        assert_eq!(honoured("0"), Some((Duration::ZERO, false)));
        assert_eq!(honoured("soon"), None);
        let huge = CrawlDelay::new(1e30, Duration::MAX);
        assert_eq!(huge.honoured, Duration::MAX);
    }
}
