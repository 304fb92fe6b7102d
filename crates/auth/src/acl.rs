//! Mosquitto ACL files: parsing `topic`/`user`/`pattern` lines and deciding
//! publish, subscribe and delivery access for a client.
//!
//! Rules that apply to a client: for an anonymous client (no username), the
//! `topic` lines before the first `user` line; for a named client, the `topic`
//! lines of its own `user` section (none if it has no section); and, for every
//! client, each `pattern` line with `%c`/`%u` substituted. As in Mosquitto, the
//! `topic` lines before the first `user` line never apply to named clients.
//! Access is denied unless some applicable rule grants it; an applicable `deny`
//! wins.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use crate::error::{AuthError, ParseErrorKind};
use crate::topic::{covers, is_valid_topic_name, validate_filter};

/// The access a rule grants, or `Deny` to take all access away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        [
            ("read", Access::Read),
            ("write", Access::Write),
            ("readwrite", Access::ReadWrite),
            ("deny", Access::Deny),
        ]
        .into_iter()
        .find_map(|(name, access)| word.eq_ignore_ascii_case(name).then_some(access))
    }

    fn grants(self, op: Op) -> bool {
        matches!(
            (self, op),
            (Access::ReadWrite, _) | (Access::Read, Op::Read) | (Access::Write, Op::Write)
        )
    }
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// Who is asking: the connection's client id and authenticated username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    pub client_id: &'a str,
    /// `None` for an anonymous client.
    pub username: Option<&'a str>,
}

impl<'a> ClientInfo<'a> {
    pub fn new(client_id: &'a str, username: Option<&'a str>) -> Self {
        ClientInfo {
            client_id,
            username,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    topic: String,
}

/// A parsed Mosquitto ACL file. The default (empty) file denies everything.
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    global: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Reads and parses the file at `path`; errors carry the path and line number.
    pub fn load(path: impl AsRef<Path>) -> Result<AclFile, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| e.at_path(path))
    }

    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<AclFile, AuthError> {
        let mut acl = AclFile::default();
        let mut current_user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |kind| AuthError::parse(index + 1, kind);
            let (directive, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim_start();
            match directive {
                "user" => {
                    if rest.is_empty() {
                        return Err(err(ParseErrorKind::Missing("user name")));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current_user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(err)?;
                    let rules = match (directive, &current_user) {
                        ("pattern", _) => &mut acl.patterns,
                        (_, None) => &mut acl.global,
                        (_, Some(user)) => acl.users.entry(user.clone()).or_default(),
                    };
                    rules.push(rule);
                }
                other => return Err(err(ParseErrorKind::UnknownDirective(other.to_owned()))),
            }
        }
        Ok(acl)
    }

    /// Whether `client` may publish to the topic name `topic` (write access).
    /// A topic name with wildcards is never allowed.
    pub fn can_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        is_valid_topic_name(topic) && self.decide(client, Op::Write, |rule| covers(rule, topic))
    }

    /// Whether `client` may receive a message published to `topic` (read access).
    /// Call this at delivery time: it also enforces `deny` rules narrower than
    /// the subscription that [`AclFile::can_subscribe`] let through.
    pub fn can_receive(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        is_valid_topic_name(topic) && self.decide(client, Op::Read, |rule| covers(rule, topic))
    }

    /// Whether `client` may subscribe to `filter` (without any `$share/<group>/`
    /// prefix): some read rule must cover every topic the filter can match, and
    /// no `deny` rule may cover the filter. An invalid filter is never allowed.
    pub fn can_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool {
        validate_filter(filter).is_ok()
            && self.decide(client, Op::Read, |rule| covers(rule, filter))
    }

    fn decide(&self, client: &ClientInfo<'_>, op: Op, applies: impl Fn(&str) -> bool) -> bool {
        let mut verdict = Verdict::default();
        let mut consider = |access: Access, topic: Option<&str>| {
            if access == Access::Deny {
                // An unsafe substitution (`None`) fails closed for deny rules.
                verdict.denied |= topic.is_none_or(&applies);
            } else if access.grants(op) && !verdict.granted {
                verdict.granted = topic.is_some_and(&applies);
            }
        };
        // As in Mosquitto: `topic` lines before any `user` line are for anonymous clients.
        if client.username.is_none() {
            for rule in &self.global {
                consider(rule.access, Some(&rule.topic));
            }
        }
        if let Some(rules) = client.username.and_then(|user| self.users.get(user)) {
            for rule in rules {
                consider(rule.access, Some(&rule.topic));
            }
        }
        for rule in &self.patterns {
            match substitute(&rule.topic, client) {
                Substituted::Topic(topic) => consider(rule.access, Some(&topic)),
                Substituted::NotApplicable => {}
                Substituted::Unsafe => consider(rule.access, None),
            }
        }
        verdict.granted && !verdict.denied
    }
}

#[derive(Default)]
struct Verdict {
    granted: bool,
    denied: bool,
}

/// Parses the part of a `topic`/`pattern` line after the directive.
fn parse_rule(rest: &str) -> Result<Rule, ParseErrorKind> {
    if rest.is_empty() {
        return Err(ParseErrorKind::Missing("topic"));
    }
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let (access, topic) = match Access::parse(first) {
        Some(access) => (access, after.trim_start()),
        None => (Access::ReadWrite, rest),
    };
    if topic.is_empty() {
        return Err(ParseErrorKind::Missing("topic"));
    }
    validate_filter(topic).map_err(|why| ParseErrorKind::InvalidTopic(topic.to_owned(), why))?;
    Ok(Rule {
        access,
        topic: topic.to_owned(),
    })
}

enum Substituted<'a> {
    Topic(Cow<'a, str>),
    /// `%u` for an anonymous client: the rule does not apply.
    NotApplicable,
    /// The value would add levels or wildcards: grants are skipped, denies deny.
    Unsafe,
}

/// Replaces `%c` with the client id and `%u` with the username.
fn substitute<'a>(pattern: &'a str, client: &ClientInfo<'_>) -> Substituted<'a> {
    if !pattern.contains('%') {
        return Substituted::Topic(Cow::Borrowed(pattern));
    }
    let mut out = String::with_capacity(pattern.len() + client.client_id.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let value = match (c, chars.clone().next()) {
            ('%', Some('c')) => Some(client.client_id),
            ('%', Some('u')) => match client.username {
                Some(user) => Some(user),
                None => return Substituted::NotApplicable,
            },
            _ => None,
        };
        match value {
            Some(value) if value.is_empty() || value.contains(['/', '+', '#', '\0']) => {
                return Substituted::Unsafe;
            }
            Some(value) => {
                out.push_str(value);
                chars.next();
            }
            None => out.push(c),
        }
    }
    Substituted::Topic(Cow::Owned(out))
}
