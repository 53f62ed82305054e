//! CSV import of customers and leads. Parsing is pure and reports every problem as (row, column,
//! problem); good rows are then written in one transaction, so an import is all-or-nothing for the
//! rows it accepts and a failure half-way writes nothing.
//!
//! Customers: `id,account_number,name,phones,email,tier,account_manager,lifetime_value,notes`
//! (`id` and `name` required; `phones` separated by `;`; `lifetime_value` like `1234.50`).
//! Leads: `id,name,phone,timezone,customer_id` (`id` and `phone` required).
//! Header names are matched without regard to case or order; unknown columns are ignored.

use crate::customers::{AuditEntry, audit_in_tx, save_customer_in_tx};
use crate::error::Result;
use crate::model::{Customer, Tier};
use crate::phone::{CountryCode, normalize_phone};
use crate::store::{BeginWrite, CrmStore, with_pool};
use domain::{AgentId, CampaignId, CustomerId, LeadId, Pii, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// One problem found in an import file. `row` is the line number in the file; the header is line 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProblem {
    pub row: u64,
    pub column: String,
    pub problem: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub imported: u64,
    pub rejected_rows: u64,
    pub problems: Vec<ImportProblem>,
}

/// A lead ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRecord {
    pub id: LeadId,
    pub name: Option<Pii<String>>,
    /// E.164.
    pub phone: Pii<String>,
    pub timezone: Option<String>,
    pub customer: Option<CustomerId>,
}

/// Rows of a CSV file as maps from lower-cased header to trimmed value, with their row numbers.
struct Table {
    rows: Vec<(u64, HashMap<String, String>)>,
}

fn read_table(text: &str, required: &[&str], problems: &mut Vec<ImportProblem>) -> Option<Table> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
        Err(e) => {
            problems.push(ImportProblem {
                row: 1,
                column: String::new(),
                problem: format!("unreadable header: {e}"),
            });
            return None;
        }
    };
    let missing: Vec<&&str> = required
        .iter()
        .filter(|r| !headers.iter().any(|h| h == **r))
        .collect();
    for column in &missing {
        problems.push(ImportProblem {
            row: 1,
            column: column.to_string(),
            problem: "required column missing".into(),
        });
    }
    if !missing.is_empty() {
        return None;
    }
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        // The line in the file (blank lines are skipped by the reader but still counted here).
        let position = match &record {
            Ok(r) => r.position(),
            Err(e) => e.position(),
        };
        let row = position.map_or(index as u64 + 2, |p| line_of_byte(text, p.byte()));
        match record {
            Ok(record) => {
                let values: HashMap<String, String> = headers
                    .iter()
                    .cloned()
                    .zip(record.iter().map(str::to_string))
                    .collect();
                if values.values().all(String::is_empty) {
                    continue; // blank line
                }
                rows.push((row, values));
            }
            Err(e) => problems.push(ImportProblem {
                row,
                column: String::new(),
                problem: format!("unreadable row: {e}"),
            }),
        }
    }
    Some(Table { rows })
}

/// The 1-based line number of the record that the reader says starts at `byte`: the reader's
/// position includes blank lines it skipped before the record, so those are stepped over first.
fn line_of_byte(text: &str, byte: u64) -> u64 {
    let bytes = text.as_bytes();
    let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
    while bytes.get(start).is_some_and(|b| *b == b'\n' || *b == b'\r') {
        start += 1;
    }
    bytes.iter().take(start).filter(|b| **b == b'\n').count() as u64 + 1
}

fn field<'a>(values: &'a HashMap<String, String>, column: &str) -> Option<&'a str> {
    values.get(column).map(String::as_str).filter(|v| !v.is_empty())
}

/// Parses a money amount like `1234`, `1234.5` or `1,234.50` into cents.
fn parse_cents(text: &str) -> Option<i64> {
    let cleaned: String = text.chars().filter(|c| *c != ',' && *c != '_').collect();
    let (whole, fraction) = cleaned.split_once('.').unwrap_or((&cleaned, ""));
    if whole.is_empty() || fraction.len() > 2 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<2}").parse().ok()?
    };
    let cents = whole.checked_abs()?.checked_mul(100)?.checked_add(fraction)?;
    Some(if whole < 0 || cleaned.starts_with('-') {
        -cents
    } else {
        cents
    })
}

struct RowCheck<'a> {
    row: u64,
    problems: &'a mut Vec<ImportProblem>,
    ok: bool,
}

impl RowCheck<'_> {
    fn fail(&mut self, column: &str, problem: impl Into<String>) {
        self.ok = false;
        self.problems.push(ImportProblem {
            row: self.row,
            column: column.into(),
            problem: problem.into(),
        });
    }
}

/// Parses a customers file: the good customers with their row (phones already E.164) and the problems.
pub fn parse_customers_csv(text: &str, country: CountryCode) -> (Vec<(u64, Customer)>, Vec<ImportProblem>) {
    let mut problems = Vec::new();
    let Some(table) = read_table(text, &["id", "name"], &mut problems) else {
        return (Vec::new(), problems);
    };
    let mut seen_ids = HashSet::new();
    let mut seen_accounts = HashSet::new();
    let mut customers = Vec::new();
    for (row, values) in table.rows {
        let mut check = RowCheck {
            row,
            problems: &mut problems,
            ok: true,
        };
        let id = match field(&values, "id").map(CustomerId::new) {
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => {
                check.fail("id", e.to_string());
                None
            }
            None => {
                check.fail("id", "required");
                None
            }
        };
        if let Some(id) = &id
            && !seen_ids.insert(id.clone())
        {
            check.fail("id", "appears twice in the file");
        }
        let account_number = field(&values, "account_number").map(str::to_string);
        if let Some(account) = &account_number
            && !seen_accounts.insert(account.clone())
        {
            check.fail("account_number", "appears twice in the file");
        }
        let name = field(&values, "name");
        if name.is_none() {
            check.fail("name", "required");
        }
        let mut phones = Vec::new();
        for raw in field(&values, "phones")
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match normalize_phone(raw, country) {
                Ok(n) => phones.push(Pii::new(n.into_string())),
                Err(e) => check.fail("phones", e.to_string()),
            }
        }
        let email = field(&values, "email");
        if let Some(email) = email
            && !(email.contains('@') && email.rsplit('@').next().is_some_and(|d| d.contains('.')))
        {
            check.fail("email", "not an email address");
        }
        let tier = match field(&values, "tier").map(str::parse::<Tier>) {
            None => Tier::default(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                check.fail("tier", e.to_string());
                Tier::default()
            }
        };
        let account_manager = match field(&values, "account_manager").map(AgentId::new) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                check.fail("account_manager", e.to_string());
                None
            }
        };
        let lifetime_value_cents = match field(&values, "lifetime_value") {
            None => 0,
            Some(v) => parse_cents(v).unwrap_or_else(|| {
                check.fail("lifetime_value", "not an amount like 1234.50");
                0
            }),
        };
        if check.ok
            && let (Some(id), Some(name)) = (id, name)
        {
            customers.push((
                row,
                Customer {
                    id,
                    account_number,
                    name: Pii::new(name.to_string()),
                    phones,
                    email: email.map(|e| Pii::new(e.to_string())),
                    tier,
                    account_manager,
                    lifetime_value_cents,
                    notes: field(&values, "notes").map(|n| Pii::new(n.to_string())),
                },
            ));
        }
    }
    (customers, problems)
}

/// Parses a leads file: the good leads (phones E.164) and the problems.
pub fn parse_leads_csv(text: &str, country: CountryCode) -> (Vec<LeadRecord>, Vec<ImportProblem>) {
    let mut problems = Vec::new();
    let Some(table) = read_table(text, &["id", "phone"], &mut problems) else {
        return (Vec::new(), problems);
    };
    let mut seen = HashSet::new();
    let mut leads = Vec::new();
    for (row, values) in table.rows {
        let mut check = RowCheck {
            row,
            problems: &mut problems,
            ok: true,
        };
        let id = match field(&values, "id").map(LeadId::new) {
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => {
                check.fail("id", e.to_string());
                None
            }
            None => {
                check.fail("id", "required");
                None
            }
        };
        if let Some(id) = &id
            && !seen.insert(id.clone())
        {
            check.fail("id", "appears twice in the file");
        }
        let phone = match field(&values, "phone").map(|p| normalize_phone(p, country)) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                check.fail("phone", e.to_string());
                None
            }
            None => {
                check.fail("phone", "required");
                None
            }
        };
        let customer = match field(&values, "customer_id").map(CustomerId::new) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                check.fail("customer_id", e.to_string());
                None
            }
        };
        if check.ok
            && let (Some(id), Some(phone)) = (id, phone)
        {
            leads.push(LeadRecord {
                id,
                name: field(&values, "name").map(|n| Pii::new(n.to_string())),
                phone: Pii::new(phone.into_string()),
                timezone: field(&values, "timezone").map(str::to_string),
                customer,
            });
        }
    }
    (leads, problems)
}

fn rejected_rows(problems: &[ImportProblem]) -> u64 {
    problems.iter().map(|p| p.row).collect::<HashSet<_>>().len() as u64
}

impl CrmStore {
    /// Imports customers from CSV: good rows in one transaction (created or replaced), bad rows in the
    /// report. Audited as one change by `actor`.
    pub async fn import_customers_csv(
        &self,
        text: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<ImportReport> {
        let (parsed, mut problems) = parse_customers_csv(text, self.country);
        let mut imported = 0u64;
        if !parsed.is_empty() {
            with_pool!(self, |pool| {
                let mut tx = pool.begin_write().await?;
                for (row, customer) in &parsed {
                    // An account number is unique: one owned by another customer is this row's problem,
                    // not a reason to fail the whole file.
                    if let Some(account) = &customer.account_number {
                        let owner = sqlx::query_scalar::<_, String>(
                            "SELECT id FROM customers WHERE account_number = $1",
                        )
                        .bind(account.clone())
                        .fetch_optional(&mut *tx)
                        .await?;
                        if owner.is_some_and(|owner| owner != customer.id.as_str()) {
                            problems.push(ImportProblem {
                                row: *row,
                                column: "account_number".into(),
                                problem: "already used by another customer".into(),
                            });
                            continue;
                        }
                    }
                    let phones: Vec<String> = customer.phones.iter().map(|p| p.expose().clone()).collect();
                    save_customer_in_tx!(tx, customer, &phones, now);
                    imported += 1;
                }
                let entry = AuditEntry {
                    at: now,
                    actor: actor.to_string(),
                    action: "customer.import".into(),
                    entity: "customer".into(),
                    entity_id: "*".into(),
                    detail: format!("imported={imported} problems={}", problems.len()),
                };
                audit_in_tx!(tx, &entry);
                tx.commit().await?;
            });
        }
        problems.sort_by_key(|p| p.row);
        Ok(ImportReport {
            imported,
            rejected_rows: rejected_rows(&problems),
            problems,
        })
    }

    /// Imports leads of `campaign` from CSV: good rows in one transaction (created or replaced, status
    /// reset to `new`), bad rows in the report. Audited as one change by `actor`.
    pub async fn import_leads_csv(
        &self,
        campaign: &CampaignId,
        text: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<ImportReport> {
        let (leads, problems) = parse_leads_csv(text, self.country);
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "lead.import".into(),
            entity: "campaign".into(),
            entity_id: campaign.to_string(),
            detail: format!("imported={} problems={}", leads.len(), problems.len()),
        };
        if !leads.is_empty() {
            with_pool!(self, |pool| {
                let mut tx = pool.begin_write().await?;
                for lead in &leads {
                    sqlx::query(
                        "INSERT INTO leads (id, campaign_id, name, phone_e164, timezone, customer_id, status, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'new', $7) \
                         ON CONFLICT (id) DO UPDATE SET campaign_id = excluded.campaign_id, name = excluded.name, \
                         phone_e164 = excluded.phone_e164, timezone = excluded.timezone, \
                         customer_id = excluded.customer_id, status = 'new'",
                    )
                    .bind(lead.id.as_str().to_string())
                    .bind(campaign.as_str().to_string())
                    .bind(lead.name.as_ref().map(|n| n.expose().clone()))
                    .bind(lead.phone.expose().clone())
                    .bind(lead.timezone.clone())
                    .bind(lead.customer.as_ref().map(|c| c.as_str().to_string()))
                    .bind(now.as_millis())
                    .execute(&mut *tx)
                    .await?;
                }
                audit_in_tx!(tx, &entry);
                tx.commit().await?;
            });
        }
        Ok(ImportReport {
            imported: leads.len() as u64,
            rejected_rows: rejected_rows(&problems),
            problems,
        })
    }

    /// Leads of a campaign, by id.
    pub async fn campaign_leads(&self, campaign: &CampaignId) -> Result<Vec<LeadRecord>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, Option<String>, String, Option<String>, Option<String>)>(
                "SELECT id, name, phone_e164, timezone, customer_id FROM leads WHERE campaign_id = $1 ORDER BY id",
            )
            .bind(campaign.as_str().to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, name, phone, timezone, customer)| {
                Ok(LeadRecord {
                    id: LeadId::new(&id).map_err(|e| crate::StoreError::Corrupt(format!("lead id: {e}")))?,
                    name: name.map(Pii::new),
                    phone: Pii::new(phone),
                    timezone,
                    customer: customer.and_then(|c| CustomerId::new(c).ok()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn customers_file_reports_each_bad_cell() {
        let text = "ID,Name,Phones,Email,Tier,Account_Manager,Lifetime_Value,Notes,extra\n\
                    c1,Ada,(415) 555-0100;+44 20 7946 0958,ada@example.com,key,alice,\"1,234.50\",vip,x\n\
                    c2,,12,not-an-email,gold,bad name,12.345,,\n\
                    \n\
                    c1,Dup,,,,,,,\n\
                    c3,Bob,,,small,,7,,\n";
        let (customers, problems) = parse_customers_csv(text, CountryCode::NANP);
        assert_eq!(customers.len(), 2);
        assert_eq!(customers[0].0, 2);
        assert_eq!(customers[0].1.phones[1].expose(), "+442079460958");
        assert_eq!(customers[0].1.lifetime_value_cents, 123_450);
        assert_eq!((customers[1].0, customers[1].1.tier), (6, Tier::Small));
        let cells: Vec<(u64, &str)> = problems.iter().map(|p| (p.row, p.column.as_str())).collect();
        assert_eq!(
            cells,
            vec![
                (3, "name"),
                (3, "phones"),
                (3, "email"),
                (3, "tier"),
                (3, "account_manager"),
                (3, "lifetime_value"),
                (5, "id")
            ]
        );
        assert_eq!(rejected_rows(&problems), 2);
    }

    #[test]
    fn missing_required_column_rejects_the_file() {
        let (customers, problems) = parse_customers_csv("id,phones\nc1,+14155550100\n", CountryCode::NANP);
        assert!(customers.is_empty());
        assert_eq!(
            problems,
            vec![ImportProblem {
                row: 1,
                column: "name".into(),
                problem: "required column missing".into()
            }]
        );
    }

    #[test]
    fn leads_file_normalises_numbers() {
        let (leads, problems) =
            parse_leads_csv("id,name,phone\nl1,Ann,415-555-0100\nl2,Ben,\n", CountryCode::NANP);
        assert_eq!(leads.len(), 1);
        assert_eq!(leads[0].phone.expose(), "+14155550100");
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].row, problems[0].column.as_str()), (3, "phone"));
    }

    #[test]
    fn amounts_parse_to_cents() {
        assert_eq!(parse_cents("0"), Some(0));
        assert_eq!(parse_cents("12.5"), Some(1250));
        assert_eq!(parse_cents("-3.05"), Some(-305));
        assert_eq!(parse_cents("-0.50"), Some(-50));
        assert_eq!(parse_cents("1.234"), None);
        assert_eq!(parse_cents("abc"), None);
        assert_eq!(parse_cents(".5"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_files_never_panic_and_every_row_is_accounted(text in "[a-z0-9,;@.+\"\n -]{0,300}") {
            let (customers, problems) = parse_customers_csv(&format!("id,name,phones,email\n{text}"), CountryCode::NANP);
            prop_assert!(problems.iter().all(|p| p.row >= 2));
            let ids: HashSet<_> = customers.iter().map(|(_, c)| c.id.clone()).collect();
            prop_assert_eq!(ids.len(), customers.len());
            let _ = parse_leads_csv(&text, CountryCode::NANP);
        }
    }
}
