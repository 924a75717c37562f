//! Organizations: who belongs to which, in what role, and the invitations that bring people in.
//! Everything is in the KV, so every instance agrees:
//! - `tollgate:org:{orgId}` → `{id, name, slug, createdAtMs}`
//! - `tollgate:org-slug:{slug}` → the org id (set-if-absent: a slug names one organization)
//! - `tollgate:org-members:{orgId}`, a hash: user id → `{email, role, joinedAtMs}` (the truth)
//! - `tollgate:user-orgs:{userId}`, a hash: org id → joined (which organizations to list for a
//!   user; every entry is checked against the members hash before use)
//! - `tollgate:org-invitation:{sha256(token)}` → `{orgId, email, role, invitedBy}`, 7 days, taken once
//! - `tollgate:org-invitations:{orgId}`, a hash: email → `{role, expiresAt, token hash}` (pending
//!   invitations, for the members page and seat counts)
//!
//! Adding a member is one hash write, so any number of joins run side by side. Changes that could
//! take away an organization's last owner (a role change, a removal, leaving) run one at a time
//! per organization under a lease, and check the owners inside it. Every change runs in a task of
//! its own: a caller that hangs up cannot stop it half-way (the writes go truth first, index
//! after, and the index is only a hint).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::domain::{Email, OrgId, OrgRole, User, UserId};
use crate::kv::{KvError, SharedKv};

/// How long an invitation's link works.
pub const INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a membership change waits for another one of the same organization.
const CHANGE_WAIT: Duration = Duration::from_secs(5);
const CHANGE_LEASE: Duration = Duration::from_secs(10);

pub mod keys {
    use crate::domain::{OrgId, UserId};

    pub fn org(org: &OrgId) -> String {
        format!("tollgate:org:{org}")
    }
    pub fn slug(slug: &str) -> String {
        format!("tollgate:org-slug:{slug}")
    }
    pub fn members(org: &OrgId) -> String {
        format!("tollgate:org-members:{org}")
    }
    pub fn user_orgs(user: &UserId) -> String {
        format!("tollgate:user-orgs:{user}")
    }
    pub fn invitations(org: &OrgId) -> String {
        format!("tollgate:org-invitations:{org}")
    }
    pub fn invitation(token_hash: &str) -> String {
        format!("tollgate:org-invitation:{token_hash}")
    }
    /// The lease under which an organization's owners may change.
    pub fn change_lease(org: &OrgId) -> String {
        format!("org:{org}")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub slug: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberRecord {
    email: Email,
    role: OrgRole,
    joined_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: UserId,
    pub email: Email,
    pub role: OrgRole,
    pub joined_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvitationRecord {
    org_id: OrgId,
    email: Email,
    role: OrgRole,
    invited_by: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingRecord {
    role: OrgRole,
    expires_at: i64,
    token_hash: String,
}

/// An invitation not yet accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingInvitation {
    pub email: Email,
    pub role: OrgRole,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("There is no such organization.")]
    NotFound,
    #[error("You are not a member of this organization.")]
    NotAMember,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("An organization keeps at least one owner: make someone else an owner first.")]
    LastOwner,
    #[error("{0}")]
    Invalid(String),
    #[error("This invitation has expired or was already used. Ask for a new one.")]
    InvitationExpired,
    #[error("This invitation was sent to another email address. Sign in with that address to accept it.")]
    InvitationForSomeoneElse,
    #[error("{email} is already a member.")]
    AlreadyAMember { email: String },
    /// The plan's seat cap is reached (`tollgate_max_seats`).
    #[error("Your plan includes {max} seats, and all are taken. Upgrade the plan to invite more people.")]
    SeatLimit { max: u32 },
    /// Another change of this organization's members took too long: retryable.
    #[error("Another change to this organization is in progress. Try again in a moment.")]
    Busy,
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Whether `token` has the shape of an invitation token (anything else is never looked up).
pub fn is_token(token: &str) -> bool {
    token.len() == 32 && token.chars().all(|c| c.is_ascii_alphanumeric())
}

fn hash_of(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A slug from a name: lower-case ASCII letters and digits, words joined by `-`, at most 40.
fn slug_of(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(40).collect();
    let slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        "org".into()
    } else {
        slug
    }
}

/// An organization's name as given: trimmed, 1 to 80 characters, no control characters.
pub fn parse_name(raw: &str) -> Result<String, OrgError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(OrgError::Invalid("Name the organization (1 to 80 characters).".into()));
    }
    Ok(name.to_string())
}

/// Run `work` to its end in a task of its own, so a caller that goes away cannot stop it half-way.
async fn detached<T: Send + 'static>(work: impl std::future::Future<Output = Result<T, OrgError>> + Send + 'static) -> Result<T, OrgError> {
    tokio::spawn(work).await.unwrap_or_else(|e| Err(OrgError::Kv(KvError::Unavailable(format!("the change failed: {e}")))))
}

pub struct Orgs {
    kv: SharedKv,
    clock: Clock,
}

impl Orgs {
    pub fn new(kv: SharedKv, clock: Clock) -> Arc<Orgs> {
        Arc::new(Orgs { kv, clock })
    }

    pub async fn get(&self, org: &OrgId) -> Result<Option<Org>, OrgError> {
        Ok(self.kv.get(&keys::org(org)).await?.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// A new organization with `owner` as its owner; its slug is the name's, made unique.
    pub async fn create(self: &Arc<Self>, name: &str, owner: &User) -> Result<Org, OrgError> {
        let name = parse_name(name)?;
        let (orgs, owner) = (self.clone(), owner.clone());
        detached(async move {
            let id = OrgId::generate();
            let base = slug_of(&name);
            let mut slug = base.clone();
            for n in 2.. {
                if orgs.kv.set_if_absent(&keys::slug(&slug), id.as_str()).await? {
                    break;
                }
                slug = match n {
                    ..=20 => format!("{base}-{n}"),
                    _ => format!("{base}-{}", crate::random::random_token(6).to_lowercase()),
                };
            }
            let org = Org { id: id.clone(), name, slug, created_at_ms: orgs.clock.unix_now_ms() };
            orgs.kv.set(&keys::org(&id), &serde_json::to_string(&org).expect("an org serialises")).await?;
            orgs.add(&id, &owner.id, &owner.email, OrgRole::Owner).await?;
            Ok(org)
        })
        .await
    }

    /// Write a membership: the members hash (the truth), then the user's index.
    async fn add(&self, org: &OrgId, user: &UserId, email: &Email, role: OrgRole) -> Result<(), OrgError> {
        let record = MemberRecord { email: email.clone(), role, joined_at_ms: self.clock.unix_now_ms() };
        self.kv.hash_set(&keys::members(org), user.as_str(), &serde_json::to_string(&record).expect("a member serialises")).await?;
        self.kv.hash_set(&keys::user_orgs(user), org.as_str(), &record.joined_at_ms.to_string()).await?;
        Ok(())
    }

    /// Every member, owners first, then admins, then members, each by when they joined.
    pub async fn members(&self, org: &OrgId) -> Result<Vec<Member>, OrgError> {
        let mut members: Vec<Member> = self
            .kv
            .hash_get_all(&keys::members(org))
            .await?
            .into_iter()
            .filter_map(|(user, json)| {
                let record: MemberRecord = serde_json::from_str(&json).ok()?;
                Some(Member {
                    user_id: UserId::parse(&user).ok()?,
                    email: record.email,
                    role: record.role,
                    joined_at_ms: record.joined_at_ms,
                })
            })
            .collect();
        members.sort_by(|a, b| (a.role, a.joined_at_ms, &a.user_id).cmp(&(b.role, b.joined_at_ms, &b.user_id)));
        Ok(members)
    }

    pub async fn member(&self, org: &OrgId, user: &UserId) -> Result<Option<Member>, OrgError> {
        let Some(json) = self.kv.hash_get(&keys::members(org), user.as_str()).await? else { return Ok(None) };
        let Ok(record) = serde_json::from_str::<MemberRecord>(&json) else { return Ok(None) };
        Ok(Some(Member { user_id: user.clone(), email: record.email, role: record.role, joined_at_ms: record.joined_at_ms }))
    }

    /// The organizations `user` belongs to, with their membership, oldest membership first.
    pub async fn of_user(&self, user: &UserId) -> Result<Vec<(Org, Member)>, OrgError> {
        let mut found = Vec::new();
        for (org, _) in self.kv.hash_get_all(&keys::user_orgs(user)).await? {
            let Ok(org) = OrgId::parse(&org) else { continue };
            if let (Some(record), Some(member)) = (self.get(&org).await?, self.member(&org, user).await?) {
                found.push((record, member));
            }
        }
        found.sort_by_key(|(org, member)| (member.joined_at_ms, org.id.clone()));
        Ok(found)
    }

    /// `actor`'s membership, which must allow managing the organization.
    pub async fn manager(&self, org: &OrgId, actor: &UserId) -> Result<Member, OrgError> {
        let member = self.member(org, actor).await?.ok_or(OrgError::NotAMember)?;
        match member.role.manages() {
            true => Ok(member),
            false => Err(OrgError::Forbidden("Only the organization's owners and admins can do that.")),
        }
    }

    /// Invite `email` as `role`; the token for the link. An admin cannot invite an owner.
    pub async fn invite(self: &Arc<Self>, org: &OrgId, actor: &UserId, email: &Email, role: OrgRole) -> Result<String, OrgError> {
        let by = self.manager(org, actor).await?;
        if role == OrgRole::Owner && by.role != OrgRole::Owner {
            return Err(OrgError::Forbidden("Only an owner can invite another owner."));
        }
        if self.members(org).await?.iter().any(|m| &m.email == email) {
            return Err(OrgError::AlreadyAMember { email: email.as_str().to_string() });
        }
        let token = crate::random::random_token(32);
        let (orgs, org, actor, email) = (self.clone(), org.clone(), actor.clone(), email.clone());
        let token_hash = hash_of(&token);
        detached(async move {
            let record = InvitationRecord { org_id: org.clone(), email: email.clone(), role, invited_by: actor };
            let link = keys::invitation(&token_hash);
            orgs.kv.set_expiring(&link, &serde_json::to_string(&record).expect("serialises"), INVITATION_TTL).await?;
            let pending = PendingRecord { role, expires_at: orgs.clock.unix_now() + INVITATION_TTL.as_secs() as i64, token_hash };
            orgs.kv.hash_set(&keys::invitations(&org), email.as_str(), &serde_json::to_string(&pending).expect("serialises")).await?;
            Ok(())
        })
        .await?;
        Ok(token)
    }

    /// Invitations not yet accepted and not expired (an expired one is forgotten here).
    pub async fn pending_invitations(&self, org: &OrgId) -> Result<Vec<PendingInvitation>, OrgError> {
        let now = self.clock.unix_now();
        let mut pending = Vec::new();
        for (email, json) in self.kv.hash_get_all(&keys::invitations(org)).await? {
            let (Ok(email), Ok(record)) = (Email::parse(&email), serde_json::from_str::<PendingRecord>(&json)) else { continue };
            if record.expires_at <= now {
                self.kv.hash_remove(&keys::invitations(org), email.as_str()).await?;
                continue;
            }
            pending.push(PendingInvitation { email, role: record.role, expires_at: record.expires_at });
        }
        pending.sort_by(|a, b| a.email.as_str().cmp(b.email.as_str()));
        Ok(pending)
    }

    /// Accept an invitation as `user`, whose email must be the invited one (the link is left
    /// unspent otherwise). Of any number of parallel accepts of one link, one succeeds.
    pub async fn accept(self: &Arc<Self>, token: &str, user: &User) -> Result<Org, OrgError> {
        let link = keys::invitation(&hash_of(token));
        let Some(json) = self.kv.get(&link).await? else { return Err(OrgError::InvitationExpired) };
        let record: InvitationRecord = serde_json::from_str(&json).map_err(|_| OrgError::InvitationExpired)?;
        if record.email != user.email {
            return Err(OrgError::InvitationForSomeoneElse);
        }
        let (orgs, user) = (self.clone(), user.clone());
        detached(async move {
            if orgs.kv.take(&link).await?.is_none() {
                return Err(OrgError::InvitationExpired);
            }
            let org = orgs.get(&record.org_id).await?.ok_or(OrgError::NotFound)?;
            match orgs.member(&org.id, &user.id).await? {
                // Already in: an invitation never lowers (or raises) a role.
                Some(_) => {}
                None => orgs.add(&org.id, &user.id, &user.email, record.role).await?,
            }
            orgs.kv.hash_remove(&keys::invitations(&org.id), user.email.as_str()).await?;
            Ok(org)
        })
        .await
    }

    /// Take back a pending invitation.
    pub async fn revoke_invitation(&self, org: &OrgId, actor: &UserId, email: &Email) -> Result<(), OrgError> {
        self.manager(org, actor).await?;
        if let Some(json) = self.kv.hash_get(&keys::invitations(org), email.as_str()).await? {
            if let Ok(record) = serde_json::from_str::<PendingRecord>(&json) {
                self.kv.delete(&keys::invitation(&record.token_hash)).await?;
            }
            self.kv.hash_remove(&keys::invitations(org), email.as_str()).await?;
        }
        Ok(())
    }

    /// `actor` sets `target`'s role. Owners change anyone; admins change admins and members to
    /// admin or member; the last owner stays one.
    pub async fn set_role(self: &Arc<Self>, org: &OrgId, actor: &UserId, target: &UserId, role: OrgRole) -> Result<Member, OrgError> {
        let (orgs, org, actor, target) = (self.clone(), org.clone(), actor.clone(), target.clone());
        detached(async move {
            orgs.one_change_at_a_time(&org, || async {
                let by = orgs.manager(&org, &actor).await?;
                let mut member = orgs.member(&org, &target).await?.ok_or(OrgError::NotFound)?;
                if by.role != OrgRole::Owner && (member.role == OrgRole::Owner || role == OrgRole::Owner) {
                    return Err(OrgError::Forbidden("Only an owner can make or unmake owners."));
                }
                if member.role == OrgRole::Owner && role != OrgRole::Owner && orgs.owners(&org).await? <= 1 {
                    return Err(OrgError::LastOwner);
                }
                member.role = role;
                let record = MemberRecord { email: member.email.clone(), role, joined_at_ms: member.joined_at_ms };
                orgs.kv.hash_set(&keys::members(&org), target.as_str(), &serde_json::to_string(&record).expect("serialises")).await?;
                Ok(member)
            })
            .await
        })
        .await
    }

    /// `actor` removes `target` (themselves: leaving). Admins remove admins and members; owners
    /// anyone; the last owner neither leaves nor is removed.
    pub async fn remove(self: &Arc<Self>, org: &OrgId, actor: &UserId, target: &UserId) -> Result<Member, OrgError> {
        let (orgs, org, actor, target) = (self.clone(), org.clone(), actor.clone(), target.clone());
        detached(async move {
            orgs.one_change_at_a_time(&org, || async {
                let member = orgs.member(&org, &target).await?.ok_or(OrgError::NotFound)?;
                if actor != target {
                    let by = orgs.manager(&org, &actor).await?;
                    if member.role == OrgRole::Owner && by.role != OrgRole::Owner {
                        return Err(OrgError::Forbidden("Only an owner can remove an owner."));
                    }
                }
                if member.role == OrgRole::Owner && orgs.owners(&org).await? <= 1 {
                    return Err(OrgError::LastOwner);
                }
                orgs.kv.hash_remove(&keys::members(&org), target.as_str()).await?;
                orgs.kv.hash_remove(&keys::user_orgs(&target), org.as_str()).await?;
                Ok(member)
            })
            .await
        })
        .await
    }

    /// An organization kept elsewhere (Clerk's): its record and its whole membership as the
    /// identity provider says now, replacing what was stored (who left is removed).
    pub async fn replace(self: &Arc<Self>, org: Org, members: Vec<(UserId, Email, OrgRole)>) -> Result<(), OrgError> {
        let orgs = self.clone();
        detached(async move {
            orgs.kv.set(&keys::org(&org.id), &serde_json::to_string(&org).expect("an org serialises")).await?;
            let current = orgs.members(&org.id).await?;
            for (user, email, role) in &members {
                // A member who stays keeps when they joined.
                let joined = current.iter().find(|m| &m.user_id == user).map_or_else(|| orgs.clock.unix_now_ms(), |m| m.joined_at_ms);
                let record = MemberRecord { email: email.clone(), role: *role, joined_at_ms: joined };
                orgs.kv.hash_set(&keys::members(&org.id), user.as_str(), &serde_json::to_string(&record).expect("serialises")).await?;
                orgs.kv.hash_set(&keys::user_orgs(user), org.id.as_str(), &record.joined_at_ms.to_string()).await?;
            }
            for gone in current.iter().map(|m| &m.user_id).filter(|user| !members.iter().any(|(u, _, _)| u == *user)) {
                orgs.kv.hash_remove(&keys::members(&org.id), gone.as_str()).await?;
                orgs.kv.hash_remove(&keys::user_orgs(gone), org.id.as_str()).await?;
            }
            Ok(())
        })
        .await
    }

    /// The organization is gone (deleted at the identity provider): its members and record too.
    pub async fn delete(self: &Arc<Self>, org: &OrgId) -> Result<(), OrgError> {
        let (orgs, org) = (self.clone(), org.clone());
        detached(async move {
            for member in orgs.members(&org).await? {
                orgs.kv.hash_remove(&keys::user_orgs(&member.user_id), org.as_str()).await?;
                orgs.kv.hash_remove(&keys::members(&org), member.user_id.as_str()).await?;
            }
            orgs.kv.delete(&keys::org(&org)).await?;
            Ok(())
        })
        .await
    }

    async fn owners(&self, org: &OrgId) -> Result<usize, OrgError> {
        Ok(self.members(org).await?.iter().filter(|m| m.role == OrgRole::Owner).count())
    }

    /// Run `change` holding the organization's lease (waiting up to [`CHANGE_WAIT`] for it).
    async fn one_change_at_a_time<T, F: std::future::Future<Output = Result<T, OrgError>>>(
        &self,
        org: &OrgId,
        change: impl FnOnce() -> F,
    ) -> Result<T, OrgError> {
        let (lease, token) = (keys::change_lease(org), crate::random::random_token(20));
        let deadline = tokio::time::Instant::now() + CHANGE_WAIT;
        while !self.kv.lease(&lease, &token, CHANGE_LEASE).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(OrgError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let outcome = change().await;
        let _ = self.kv.release(&lease, &token).await;
        outcome
    }

    /// Seats in use: the members, and the pending invitations too when they count.
    pub async fn seats_used(&self, org: &OrgId, count_invitations: bool) -> Result<u32, OrgError> {
        let members = self.kv.hash_get_all(&keys::members(org)).await?.len();
        let invited = match count_invitations {
            true => self.pending_invitations(org).await?.len(),
            false => 0,
        };
        Ok(u32::try_from(members + invited).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::memory::MemoryKv;

    fn user(n: u32) -> User {
        User { id: UserId::parse(&format!("user_{n}")).unwrap(), email: Email::parse(&format!("u{n}@example.com")).unwrap(), org: None }
    }

    fn orgs() -> Arc<Orgs> {
        Orgs::new(Arc::new(MemoryKv::default()), Clock::system())
    }

    #[test]
    fn slugs_from_names() {
        assert_eq!(slug_of("Acme, Inc."), "acme-inc");
        assert_eq!(slug_of("  --Ünïcode Team 2  "), "n-code-team-2");
        assert_eq!(slug_of("!!!"), "org");
        assert!(parse_name(" ").is_err() && parse_name(&"x".repeat(81)).is_err() && parse_name("a\u{7}b").is_err());
    }

    #[tokio::test]
    async fn the_last_owner_stays_and_roles_follow_the_rules() {
        let orgs = orgs();
        let (owner, admin, member) = (user(1), user(2), user(3));
        let acme = orgs.create("Acme", &owner).await.unwrap();
        let again = orgs.create("Acme", &admin).await.unwrap();
        assert_eq!((acme.slug.as_str(), again.slug.as_str()), ("acme", "acme-2"), "a slug names one organization");
        for (who, role) in [(&admin, OrgRole::Admin), (&member, OrgRole::Member)] {
            let token = orgs.invite(&acme.id, &owner.id, &who.email, role).await.unwrap();
            assert!(matches!(orgs.accept(&token, &user(9)).await, Err(OrgError::InvitationForSomeoneElse)));
            orgs.accept(&token, who).await.unwrap();
            assert!(matches!(orgs.accept(&token, who).await, Err(OrgError::InvitationExpired)), "one use");
        }
        let roles: Vec<OrgRole> = orgs.members(&acme.id).await.unwrap().iter().map(|m| m.role).collect();
        assert_eq!(roles, [OrgRole::Owner, OrgRole::Admin, OrgRole::Member]);
        assert!(matches!(orgs.invite(&acme.id, &member.id, &user(4).email, OrgRole::Member).await, Err(OrgError::Forbidden(_))));
        assert!(matches!(orgs.invite(&acme.id, &admin.id, &user(4).email, OrgRole::Owner).await, Err(OrgError::Forbidden(_))));
        assert!(matches!(orgs.remove(&acme.id, &owner.id, &owner.id).await, Err(OrgError::LastOwner)), "the last owner cannot leave");
        assert!(matches!(orgs.set_role(&acme.id, &owner.id, &owner.id, OrgRole::Admin).await, Err(OrgError::LastOwner)));
        assert!(matches!(orgs.remove(&acme.id, &admin.id, &owner.id).await, Err(OrgError::Forbidden(_))));
        orgs.set_role(&acme.id, &owner.id, &admin.id, OrgRole::Owner).await.unwrap();
        orgs.remove(&acme.id, &owner.id, &owner.id).await.unwrap();
        assert_eq!(orgs.of_user(&owner.id).await.unwrap(), [], "left");
        assert_eq!(orgs.seats_used(&acme.id, false).await.unwrap(), 2);
        orgs.invite(&acme.id, &admin.id, &user(5).email, OrgRole::Member).await.unwrap();
        assert_eq!(orgs.seats_used(&acme.id, true).await.unwrap(), 3, "a pending invitation counts when asked");
    }

    /// A caller that hangs up (its future dropped) once a change has begun leaves the change
    /// whole: the accepted member is in with the link spent, the removed one out of both the
    /// members and their index.
    #[tokio::test]
    async fn a_caller_that_hangs_up_leaves_each_change_whole() {
        /// Polled once (the change starts), then dropped, as axum drops a handler's future.
        fn hang_up<T>(change: impl std::future::Future<Output = T>) {
            let mut change = std::pin::pin!(change);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(change.as_mut().poll(&mut cx).is_pending(), "cut short");
        }
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        let orgs = orgs();
        let (owner, joiner) = (user(1), user(2));
        let org = orgs.create("Cut", &owner).await.unwrap();
        let token = orgs.invite(&org.id, &owner.id, &joiner.email, OrgRole::Member).await.unwrap();
        hang_up(orgs.accept(&token, &joiner));
        settle().await;
        assert!(orgs.member(&org.id, &joiner.id).await.unwrap().is_some(), "in");
        assert_eq!(orgs.of_user(&joiner.id).await.unwrap().len(), 1, "and indexed");
        assert!(matches!(orgs.accept(&token, &joiner).await, Err(OrgError::InvitationExpired)), "the link spent");
        assert!(orgs.pending_invitations(&org.id).await.unwrap().is_empty());

        hang_up(orgs.remove(&org.id, &owner.id, &joiner.id));
        settle().await;
        assert!(orgs.member(&org.id, &joiner.id).await.unwrap().is_none(), "out");
        assert!(orgs.of_user(&joiner.id).await.unwrap().is_empty(), "and out of the index");
        assert!(orgs.kv.lease(&keys::change_lease(&org.id), "next", CHANGE_LEASE).await.unwrap(), "the lease was given back");
    }

    /// Two owners demoting each other at once: one wins, and the organization keeps an owner.
    #[tokio::test]
    async fn concurrent_demotions_keep_an_owner() {
        for _ in 0..20 {
            let orgs = orgs();
            let (a, b) = (user(1), user(2));
            let org = orgs.create("Pair", &a).await.unwrap();
            let token = orgs.invite(&org.id, &a.id, &b.email, OrgRole::Owner).await.unwrap();
            orgs.accept(&token, &b).await.unwrap();
            let (one, two) =
                tokio::join!(orgs.set_role(&org.id, &a.id, &b.id, OrgRole::Member), orgs.set_role(&org.id, &b.id, &a.id, OrgRole::Member));
            assert!(one.is_ok() != two.is_ok(), "exactly one demotion goes through: {one:?} {two:?}");
            assert_eq!(orgs.owners(&org.id).await.unwrap(), 1);
        }
    }
}
