//! Least privilege for customer records. An agent reads a customer only while that customer's call
//! (or a preview campaign's lead) is on their desktop: offered, dialling, connected, held or
//! consulting. Roles whose policy says so (supervisors and admins by default) read any customer.
//! Numbers are masked for roles whose policy says so. Every lookup is audited by the API and limited
//! per user (see [`crate::api`]).
//!
//! "On their desktop" is the desk hub's record of the calls tied to the agent, on this node or any
//! other of the cluster ([`shown_to`]), so the answer does not depend on which node the request
//! reaches. The decision itself is the pure [`decide`].

use call_control::desk::{CallPhase, DeskHub, PreviewOffer, ScreenPop};
use crm_store::{CountryCode, CustomerCard, Role, normalize_phone};
use domain::{AgentId, CustomerId};

/// What one role may see of customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolePolicy {
    /// Read any customer record, not only the one on their desktop.
    pub read_any_customer: bool,
    /// See phone numbers whole (else all but the last two digits are masked).
    pub full_numbers: bool,
}

/// The customer-data rules of the desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerPolicy {
    pub agent: RolePolicy,
    pub supervisor: RolePolicy,
    pub admin: RolePolicy,
    /// Customer lookups a user may make in a burst...
    pub lookups_burst: u32,
    /// ...and per second after it.
    pub lookups_per_sec: u32,
}

impl Default for CustomerPolicy {
    fn default() -> Self {
        let all = RolePolicy {
            read_any_customer: true,
            full_numbers: true,
        };
        Self {
            agent: RolePolicy {
                read_any_customer: false,
                full_numbers: false,
            },
            supervisor: all,
            admin: all,
            lookups_burst: 20,
            lookups_per_sec: 1,
        }
    }
}

impl CustomerPolicy {
    pub fn of(&self, role: Role) -> RolePolicy {
        match role {
            Role::Agent => self.agent,
            Role::Supervisor => self.supervisor,
            Role::Admin => self.admin,
        }
    }
}

/// One call or preview on an agent's desktop, as far as customer access goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub customer: Option<CustomerId>,
    pub account: Option<String>,
    /// The call's numbers (and the customer's), in E.164.
    pub numbers: Vec<String>,
    /// Whether the call is in a phase that opens the record (wrap-up and ended calls do not).
    pub live: bool,
}

fn live(phase: CallPhase) -> bool {
    matches!(
        phase,
        CallPhase::Offered
            | CallPhase::Dialing
            | CallPhase::Connected
            | CallPhase::Held
            | CallPhase::Consulting
    )
}

fn e164(raw: &str, country: CountryCode) -> Option<String> {
    normalize_phone(raw, country).ok().map(|n| n.as_str().to_string())
}

impl Shown {
    fn of_card(card: Option<&CustomerCard>, numbers: Vec<String>, live: bool, country: CountryCode) -> Self {
        let mut numbers = numbers;
        if let Some(card) = card {
            numbers.extend(
                card.customer
                    .phones
                    .iter()
                    .filter_map(|p| e164(p.expose(), country)),
            );
        }
        Self {
            customer: card.map(|c| c.customer.id.clone()),
            account: card.and_then(|c| c.customer.account_number.clone()),
            numbers,
            live,
        }
    }

    pub fn of_pop(pop: &ScreenPop, phase: CallPhase, country: CountryCode) -> Self {
        let numbers = [pop.caller.expose(), pop.called.expose()]
            .into_iter()
            .filter_map(|n| e164(n, country))
            .collect();
        Self::of_card(pop.customer.as_ref(), numbers, live(phase), country)
    }

    pub fn of_preview(offer: &PreviewOffer, country: CountryCode) -> Self {
        let numbers = e164(offer.phone.expose(), country).into_iter().collect();
        Self::of_card(offer.customer.as_ref(), numbers, true, country)
    }
}

/// What a lookup asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// By phone number (E.164 if it could be read as one).
    Phone(Option<String>),
    Account(String),
    Id(CustomerId),
}

/// The answer to a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Show the record (numbers masked unless the role sees them whole).
    Show,
    /// Say there is no such customer (only when the agent was entitled to ask).
    NotFound,
    /// Refuse, whether or not the customer exists (so refusals reveal nothing).
    Forbidden,
}

/// The pure decision: may a user with `policy` and these desktop items see the `found` record?
pub fn decide(
    policy: RolePolicy,
    shown: &[Shown],
    lookup: &Lookup,
    found: Option<&CustomerCard>,
) -> Decision {
    if policy.read_any_customer {
        return if found.is_some() {
            Decision::Show
        } else {
            Decision::NotFound
        };
    }
    let live: Vec<&Shown> = shown.iter().filter(|s| s.live).collect();
    let mine = |card: &CustomerCard| {
        live.iter().any(|s| {
            s.customer.as_ref() == Some(&card.customer.id)
                || card
                    .customer
                    .phones
                    .iter()
                    .any(|p| s.numbers.iter().any(|n| n == p.expose()))
        })
    };
    let asked_about_mine = match lookup {
        Lookup::Phone(Some(n)) => live.iter().any(|s| s.numbers.contains(n)),
        Lookup::Phone(None) => false,
        Lookup::Account(a) => live.iter().any(|s| s.account.as_deref() == Some(a.as_str())),
        Lookup::Id(id) => live.iter().any(|s| s.customer.as_ref() == Some(id)),
    };
    match found {
        Some(card) if mine(card) => Decision::Show,
        None if asked_about_mine => Decision::NotFound,
        _ => Decision::Forbidden,
    }
}

/// What the agent's desktop shows now, wherever it is attached: the calls tied to the agent on any
/// node of the cluster (the desk hub's record, not a socket's), and the preview lead shown to them.
/// An API request may land on any node; the answer is the same on each.
pub fn shown_to(desks: &DeskHub, agent: &AgentId, country: CountryCode) -> Vec<Shown> {
    desks
        .calls_of(agent)
        .iter()
        .map(|c| Shown::of_pop(&c.pop, c.phase, country))
        .chain(
            desks
                .preview_of(agent)
                .iter()
                .map(|p| Shown::of_preview(p, country)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_store::{Customer, Tier};
    use domain::Pii;

    fn card(id: &str, phone: &str, account: &str) -> CustomerCard {
        CustomerCard {
            customer: Customer {
                id: CustomerId::new(id).expect("id"),
                account_number: Some(account.into()),
                name: Pii::new("Erika".into()),
                phones: vec![Pii::new(phone.into())],
                email: None,
                tier: Tier::Normal,
                account_manager: None,
                lifetime_value_cents: 0,
                notes: None,
            },
            recent: Vec::new(),
            queue_priority: 0,
        }
    }

    fn shown(customer: Option<&str>, number: &str, live: bool) -> Shown {
        Shown {
            customer: customer.map(|c| CustomerId::new(c).expect("id")),
            account: None,
            numbers: vec![number.into()],
            live,
        }
    }

    const AGENT: RolePolicy = RolePolicy {
        read_any_customer: false,
        full_numbers: false,
    };

    #[test]
    fn an_agent_sees_only_the_customer_on_their_desktop() {
        let erika = card("c-erika", "+4930123456", "A-1");
        let max = card("c-max", "+4930999999", "A-2");
        let desk = [shown(Some("c-erika"), "+4930123456", true)];
        let by_phone = |n: &str| Lookup::Phone(Some(n.into()));
        assert_eq!(
            decide(AGENT, &desk, &by_phone("+4930123456"), Some(&erika)),
            Decision::Show
        );
        assert_eq!(
            decide(AGENT, &desk, &Lookup::Account("A-1".into()), Some(&erika)),
            Decision::Show
        );
        assert_eq!(
            decide(AGENT, &desk, &by_phone("+4930999999"), Some(&max)),
            Decision::Forbidden
        );
        // Not found is said only about the caller's own number; elsewhere it is a refusal too.
        assert_eq!(
            decide(AGENT, &desk, &by_phone("+4930123456"), None),
            Decision::NotFound
        );
        assert_eq!(
            decide(AGENT, &desk, &by_phone("+4930555555"), None),
            Decision::Forbidden
        );
        // Nothing on the desktop, or only a call in wrap-up: nothing to see.
        assert_eq!(
            decide(AGENT, &[], &by_phone("+4930123456"), Some(&erika)),
            Decision::Forbidden
        );
        let wrap = [shown(Some("c-erika"), "+4930123456", false)];
        assert_eq!(
            decide(AGENT, &wrap, &by_phone("+4930123456"), Some(&erika)),
            Decision::Forbidden
        );
        // An unknown caller who turns out to have a record (matched by number) is theirs too.
        let unknown = [shown(None, "+4930123456", true)];
        assert_eq!(
            decide(
                AGENT,
                &unknown,
                &Lookup::Id(erika.customer.id.clone()),
                Some(&erika)
            ),
            Decision::Show
        );
    }

    #[test]
    fn roles_with_the_permission_read_any_customer() {
        let any = RolePolicy {
            read_any_customer: true,
            full_numbers: true,
        };
        let max = card("c-max", "+4930999999", "A-2");
        assert_eq!(
            decide(any, &[], &Lookup::Account("A-2".into()), Some(&max)),
            Decision::Show
        );
        assert_eq!(
            decide(any, &[], &Lookup::Account("A-3".into()), None),
            Decision::NotFound
        );
    }
}
