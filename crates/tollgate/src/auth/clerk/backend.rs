//! The few Backend API calls Tollgate makes (`{CLERK_API_URL}/v1`, the secret key as bearer): the
//! JWKS, a user's primary email, an organization's memberships, a handshake's cookies, and
//! revoking a session at sign-out. Every failure (the network,
//! a 429, a 5xx, an unexpected body) is an error the caller answers with a retryable 503.

use serde::Deserialize;

use tollgate_core::config::Secret;

/// The Backend API version Tollgate speaks (what `@clerk/backend` sends).
const API_VERSION: &str = "2026-05-12";
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct BackendApi {
    http: reqwest::Client,
    base: String,
    secret_key: Secret,
}

#[derive(Debug, thiserror::Error)]
#[error("Clerk Backend API: {0}")]
pub(crate) struct BackendError(String);

#[derive(Deserialize)]
pub(crate) struct JwkSet {
    pub(crate) keys: Vec<Jwk>,
}

#[derive(Deserialize)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    pub(crate) kty: String,
    #[serde(default)]
    pub(crate) n: String,
    #[serde(default)]
    pub(crate) e: String,
    /// What WebCrypto holds a key to when Clerk imports it (`token::VerifyingKey`).
    pub(crate) alg: Option<serde_json::Value>,
    #[serde(rename = "use")]
    pub(crate) use_: Option<serde_json::Value>,
    pub(crate) key_ops: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UserJson {
    primary_email_address_id: Option<String>,
    #[serde(default)]
    email_addresses: Vec<EmailAddressJson>,
}

#[derive(Deserialize)]
struct EmailAddressJson {
    id: String,
    email_address: String,
}

/// An organization and its members as the Backend API lists them.
pub(crate) struct OrganizationMembers {
    pub(crate) name: String,
    pub(crate) slug: String,
    /// User id, identifier (the email, usually), role key (`org:admin`).
    pub(crate) members: Vec<(String, String, String)>,
}

#[derive(Deserialize)]
struct MembershipPage {
    data: Vec<MembershipJson>,
    total_count: usize,
}

#[derive(Deserialize)]
struct MembershipJson {
    role: String,
    organization: OrganizationJson,
    public_user_data: PublicUserDataJson,
}

#[derive(Deserialize)]
struct OrganizationJson {
    name: String,
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Deserialize)]
struct PublicUserDataJson {
    user_id: String,
    #[serde(default)]
    identifier: String,
}

/// A user as far as Tollgate cares: `None` when Clerk does not know them (deleted).
pub(crate) enum UserLookup {
    Found { primary_email: Option<String> },
    Missing,
}

impl BackendApi {
    pub(crate) fn new(base: &str, secret_key: Secret) -> BackendApi {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().expect("an HTTP client builds");
        BackendApi { http, base: base.trim_end_matches('/').to_string(), secret_key }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1{path}", self.base))
            .bearer_auth(self.secret_key.expose())
            .header("Clerk-API-Version", API_VERSION)
            .header("User-Agent", concat!("tollgate/", env!("CARGO_PKG_VERSION")))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, BackendError> {
        let response = request.send().await.map_err(|e| BackendError(format!("unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(response)
        } else {
            Err(BackendError(format!("answered {status}")))
        }
    }

    pub(crate) async fn jwks(&self) -> Result<JwkSet, BackendError> {
        let response = self.send(self.request(reqwest::Method::GET, "/jwks")).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(BackendError("no JWKS at /v1/jwks (is CLERK_API_URL right?)".into()));
        }
        read_json(response, "the JWKS").await
    }

    pub(crate) async fn user(&self, user_id: &str) -> Result<UserLookup, BackendError> {
        let response = self.send(self.request(reqwest::Method::GET, &format!("/users/{user_id}"))).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(UserLookup::Missing);
        }
        let user: UserJson = read_json(response, "the user").await?;
        let primary_email =
            user.primary_email_address_id.and_then(|id| user.email_addresses.into_iter().find(|e| e.id == id)).map(|e| e.email_address);
        Ok(UserLookup::Found { primary_email })
    }

    /// Every membership of an organization (`GET /v1/organizations/{id}/memberships`, 100 a
    /// page); `None` when Clerk does not know the organization (deleted). An organization without
    /// members has no name to read: it comes back with an empty one.
    pub(crate) async fn organization_members(&self, org_id: &str) -> Result<Option<OrganizationMembers>, BackendError> {
        let mut found = OrganizationMembers { name: String::new(), slug: String::new(), members: Vec::new() };
        loop {
            let path = format!("/organizations/{org_id}/memberships?limit=100&offset={}", found.members.len());
            let response = self.send(self.request(reqwest::Method::GET, &path)).await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let page: MembershipPage = read_json(response, "the organization's memberships").await?;
            let last = page.data.is_empty();
            for membership in page.data {
                found.name = membership.organization.name;
                found.slug = membership.organization.slug.unwrap_or_default();
                found.members.push((membership.public_user_data.user_id, membership.public_user_data.identifier, membership.role));
            }
            if last || found.members.len() >= page.total_count {
                return Ok(Some(found));
            }
        }
    }

    /// The `Set-Cookie` lines a handshake's nonce stands for (`GET /v1/clients/handshake_payload`).
    /// A nonce the Backend API does not know (a 4xx) stands for none, as in Clerk's SDK.
    pub(crate) async fn handshake_payload(&self, nonce: &str) -> Result<Vec<String>, BackendError> {
        #[derive(Deserialize)]
        struct Payload {
            directives: Vec<serde_json::Value>,
        }
        let request = self.request(reqwest::Method::GET, "/clients/handshake_payload").query(&[("nonce", nonce)]);
        let response = request.send().await.map_err(|e| BackendError(format!("unreachable: {e}")))?;
        let status = response.status();
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(%status, "the Backend API does not know this handshake nonce");
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(BackendError(format!("answered {status}")));
        }
        let payload: Payload = read_json(response, "the handshake payload").await?;
        Ok(payload.directives.into_iter().map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string)).collect())
    }

    /// End a session (sign-out); one already ended or unknown (a 4xx) is fine.
    pub(crate) async fn revoke_session(&self, session_id: &str) -> Result<(), BackendError> {
        let path = format!("/sessions/{}/revoke", form_urlencoded::byte_serialize(session_id.as_bytes()).collect::<String>());
        let response = self.request(reqwest::Method::POST, &path).send().await.map_err(|e| BackendError(format!("unreachable: {e}")))?;
        match response.status() {
            status if status.is_success() || status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS => Ok(()),
            status => Err(BackendError(format!("answered {status}"))),
        }
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::Response, what: &str) -> Result<T, BackendError> {
    let body = response.bytes().await.map_err(|e| BackendError(format!("{what} was cut short: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| BackendError(format!("{what} is unreadable: {e}")))
}
