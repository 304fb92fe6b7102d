//! Authentication and authorization for the handler: loads the password and ACL
//! files named in the config and answers the questions the protocol code asks.

use std::sync::Arc;

use throng_auth::{AclFile, ClientInfo, PasswordFile};

use crate::config::HandlerConfig;

/// Outcome of checking a CONNECT's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Accepted,
    BadCredentials,
    NotAuthorized,
}

#[derive(Debug, Default)]
pub struct Security {
    allow_anonymous: bool,
    passwords: Option<PasswordFile>,
    acl: Option<AclFile>,
}

impl Security {
    pub fn load(config: &HandlerConfig) -> anyhow::Result<Security> {
        let passwords = match &config.password_file {
            Some(path) => Some(PasswordFile::load(path)?),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => Some(AclFile::load(path)?),
            None => None,
        };
        Ok(Security {
            allow_anonymous: config.allow_anonymous,
            passwords,
            acl,
        })
    }

    /// Mosquitto's rules: a username is checked against the password file when one
    /// is configured; without a username the client is anonymous.
    pub fn login(&self, username: Option<&str>, password: Option<&[u8]>) -> Login {
        match (username, &self.passwords) {
            (Some(user), Some(file)) => {
                if file.verify(user, password.unwrap_or_default()) {
                    Login::Accepted
                } else {
                    Login::BadCredentials
                }
            }
            (Some(_), None) if self.allow_anonymous => Login::Accepted,
            (Some(_), None) => Login::NotAuthorized,
            (None, _) if self.allow_anonymous => Login::Accepted,
            (None, _) => Login::NotAuthorized,
        }
    }

    pub fn has_acl(&self) -> bool {
        self.acl.is_some()
    }

    pub fn can_publish(&self, client_id: &str, username: Option<&Arc<str>>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_publish(&client_info(client_id, username), topic))
    }

    pub fn can_subscribe(
        &self,
        client_id: &str,
        username: Option<&Arc<str>>,
        filter: &str,
    ) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_subscribe(&client_info(client_id, username), filter))
    }

    pub fn can_receive(&self, client_id: &str, username: Option<&Arc<str>>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_receive(&client_info(client_id, username), topic))
    }
}

fn client_info<'a>(client_id: &'a str, username: Option<&'a Arc<str>>) -> ClientInfo<'a> {
    ClientInfo {
        client_id,
        username: username.map(|u| &**u),
    }
}
