//! Conversion: a lead becomes a contact (and optionally a company and a deal). Existing
//! contacts with the same phone or e-mail and companies with the same INN are linked, not
//! duplicated; the lead keeps its history and the links go both ways.

use crate::db::with_read;
use crate::ts::Ts;
use crate::users::Access;
use crate::workflow::{WorkflowError, invalid, write_tx};
use crate::{Lead, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use voronka_domain::workflow::{COMPANY_SIZES, inn_valid, kpp_valid, ogrn_valid, okpo_valid, size_by_employees};

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactSpec {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub messenger: Option<String>,
    pub position: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanySpec {
    pub name: Option<String>,
    pub inn: Option<String>,
    pub kpp: Option<String>,
    pub ogrn: Option<String>,
    pub okpo: Option<String>,
    /// large, medium, small or micro (from `employees` when absent).
    pub size: Option<String>,
    pub employees: Option<u64>,
    pub industry: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DealSpec {
    pub title: Option<String>,
    pub amount: Option<f64>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertSpec {
    #[serde(default)]
    pub contact: ContactSpec,
    pub company: Option<CompanySpec>,
    pub deal: Option<DealSpec>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Converted {
    pub contact_id: Uuid,
    pub company_id: Option<Uuid>,
    pub deal_id: Option<Uuid>,
    /// Seconds from the lead's creation to the client.
    pub time_to_client_seconds: i64,
    pub contact_linked: bool,
    pub company_linked: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Contact {
    pub id: Uuid,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub messenger: Option<String>,
    pub position: Option<String>,
    pub company_id: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Ts,
    /// Every lead of this person the viewer may see, oldest first.
    pub lead_ids: Vec<Uuid>,
    /// The consents given with those leads, oldest first: they stay with their lead.
    pub consents: Vec<LeadConsent>,
    pub company: Option<Company>,
}

/// A consent to marketing as given with one lead.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeadConsent {
    pub lead_id: Uuid,
    pub marketing: bool,
    pub text: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub at: Option<Ts>,
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    id: Uuid,
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    messenger: Option<String>,
    position: Option<String>,
    company_id: Option<Uuid>,
    created_at: Ts,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Company {
    pub id: Uuid,
    pub name: String,
    pub inn: Option<String>,
    pub kpp: Option<String>,
    pub ogrn: Option<String>,
    pub okpo: Option<String>,
    pub size: Option<String>,
    pub industry: Option<String>,
}

impl ConvertSpec {
    /// Checks the registration numbers by their check digits and the other fields.
    pub fn check(&self) -> Result<(), WorkflowError> {
        if let Some(c) = &self.company {
            let bad = |f: &str, v: &Option<String>, ok: fn(&str) -> bool| v.as_deref().is_some_and(|x| !ok(x)).then(|| f.to_string());
            if let Some(f) = bad("company.inn", &c.inn, inn_valid) {
                return Err(invalid(&f, "the INN fails its check digits", "ИНН не проходит проверку контрольных цифр"));
            }
            if let Some(f) = bad("company.kpp", &c.kpp, kpp_valid) {
                return Err(invalid(
                    &f,
                    "a KPP is 9 characters: 4 digits, 2 digits or letters, 3 digits",
                    "КПП — 9 символов: 4 цифры, 2 цифры или буквы, 3 цифры",
                ));
            }
            if let Some(f) = bad("company.ogrn", &c.ogrn, ogrn_valid) {
                return Err(invalid(&f, "the OGRN fails its check digit", "ОГРН не проходит проверку контрольной цифры"));
            }
            if let Some(f) = bad("company.okpo", &c.okpo, okpo_valid) {
                return Err(invalid(&f, "the OKPO fails its check digit", "ОКПО не проходит проверку контрольной цифры"));
            }
            if c.size.as_deref().is_some_and(|s| !COMPANY_SIZES.contains(&s)) {
                return Err(invalid("company.size", "use large, medium, small or micro", "допустимо large, medium, small или micro"));
            }
            if c.name.as_deref().is_none_or(|n| n.trim().is_empty()) && c.inn.is_none() {
                return Err(invalid("company.name", "a company needs a name or an INN", "у компании должно быть название или ИНН"));
            }
        }
        if let Some(d) = &self.deal
            && d.amount.is_some_and(|a| !a.is_finite() || a < 0.0)
        {
            return Err(invalid("deal.amount", "must be a number not below 0", "нужно неотрицательное число"));
        }
        if let Some(e) = &self.contact.email
            && voronka_domain::Email::parse(e).is_none()
        {
            return Err(invalid("contact.email", "not a valid e-mail address", "некорректный адрес e-mail"));
        }
        Ok(())
    }
}

impl Store {
    pub async fn convert(
        &self,
        id: Uuid,
        spec: &ConvertSpec,
        actor: &str,
        access: &Access,
        region: voronka_domain::PhoneRegion,
    ) -> Result<Converted, WorkflowError> {
        spec.check()?;
        let lead: Lead = self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        if lead.status == "converted" {
            return Err(WorkflowError::AlreadyConverted);
        }
        if matches!(lead.status.as_str(), "refused" | "junk") {
            return Err(WorkflowError::InvalidTransition { from: lead.status.clone(), to: "converted".into() });
        }
        let c = &spec.contact;
        let phone = match c.phone.as_deref() {
            Some(p) => Some(
                voronka_domain::Phone::parse(p, region)
                    .ok_or_else(|| invalid("contact.phone", "not a valid phone number", "некорректный номер телефона"))?
                    .as_str()
                    .to_string(),
            ),
            None => lead.phone.clone(),
        };
        let email = c.email.as_deref().and_then(voronka_domain::Email::parse).map(|e| e.as_str().to_string()).or(lead.email.clone());
        let name = c.name.clone().or(lead.name.clone());
        let position = c.position.clone().or(lead.position.clone());
        let messenger = c.messenger.clone().or(lead.messenger.clone());
        let now = self.now();
        let out = write_tx!(&self.db, tx => {
            // The company: by INN when given, else new.
            let mut company_linked = false;
            let company_id = match &spec.company {
                None => None,
                Some(co) => {
                    let existing: Option<Uuid> = match co.inn.as_deref() {
                        Some(inn) => sqlx::query_scalar("SELECT id FROM companies WHERE inn = $1").bind(inn.trim()).fetch_optional(&mut *tx).await?,
                        None => None,
                    };
                    match existing {
                        Some(cid) => {
                            company_linked = true;
                            Some(cid)
                        }
                        None => {
                            let cid = Uuid::now_v7();
                            let size = co.size.clone().or(co.employees.map(|n| size_by_employees(n).to_string()));
                            let cname = co.name.clone().filter(|n| !n.trim().is_empty()).or(lead.company.clone()).unwrap_or_else(|| co.inn.clone().unwrap_or_default());
                            sqlx::query("INSERT INTO companies (id, name, inn, kpp, ogrn, okpo, size, industry, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                                .bind(cid).bind(cname.trim()).bind(co.inn.as_deref().map(str::trim)).bind(co.kpp.as_deref()).bind(co.ogrn.as_deref())
                                .bind(co.okpo.as_deref()).bind(size).bind(co.industry.as_deref()).bind(now)
                                .execute(&mut *tx).await?;
                            Some(cid)
                        }
                    }
                }
            };
            // The contact: the same person by phone or e-mail, else new.
            let existing: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM contacts WHERE (CAST($1 AS TEXT) IS NOT NULL AND phone = $1) OR (CAST($2 AS TEXT) IS NOT NULL AND email = $2) ORDER BY created_at LIMIT 1",
            )
            .bind(phone.as_deref()).bind(email.as_deref()).fetch_optional(&mut *tx).await?;
            let contact_linked = existing.is_some();
            let contact_id = match existing {
                Some(cid) => {
                    sqlx::query("UPDATE contacts SET company_id = COALESCE(company_id, $1), email = COALESCE(email, $2), phone = COALESCE(phone, $3) WHERE id = $4")
                        .bind(company_id).bind(email.as_deref()).bind(phone.as_deref()).bind(cid).execute(&mut *tx).await?;
                    cid
                }
                None => {
                    let cid = Uuid::now_v7();
                    sqlx::query("INSERT INTO contacts (id, name, phone, email, messenger, position, company_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                        .bind(cid).bind(name.as_deref()).bind(phone.as_deref()).bind(email.as_deref()).bind(messenger.as_deref())
                        .bind(position.as_deref()).bind(company_id).bind(now)
                        .execute(&mut *tx).await?;
                    cid
                }
            };
            let deal_id = match &spec.deal {
                None => None,
                Some(d) => {
                    let did = Uuid::now_v7();
                    sqlx::query("INSERT INTO deals (id, lead_id, contact_id, company_id, title, amount, currency, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                        .bind(did).bind(id).bind(contact_id).bind(company_id).bind(d.title.as_deref()).bind(d.amount)
                        .bind(d.currency.as_deref().unwrap_or("RUB")).bind(now)
                        .execute(&mut *tx).await?;
                    Some(did)
                }
            };
            let n = sqlx::query(
                "UPDATE leads SET status = 'converted', contact_id = $1, company_id = $2, deal_id = $3, converted_at = $4, updated_at = $4, \
                 sla_due_at = NULL, queued_at = NULL WHERE id = $5 AND status NOT IN ('converted', 'refused', 'junk')",
            )
            .bind(contact_id).bind(company_id).bind(deal_id).bind(now).bind(id)
            .execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                return Err(WorkflowError::AlreadyConverted);
            }
            let seconds = (now.0 - lead.created_at.0).num_seconds();
            let data = json!({"from": lead.status, "contact_id": contact_id, "company_id": company_id, "deal_id": deal_id,
                              "time_to_client_seconds": seconds, "contact_linked": contact_linked, "company_linked": company_linked});
            sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'converted', $2, $3, $4, $2)")
                .bind(id).bind(now).bind(actor).bind(&data).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.converted', $1, $2, $3, $3)")
                .bind(id).bind(&data).bind(now).execute(&mut *tx).await?;
            Converted { contact_id, company_id, deal_id, time_to_client_seconds: seconds, contact_linked, company_linked }
        });
        Ok(out)
    }

    /// A contact with every lead of the person, when `access` may see one of them.
    pub async fn contact(&self, id: Uuid, access: &Access) -> Result<Option<Contact>, StoreError> {
        let row: Option<ContactRow> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, name, phone, email, messenger, position, company_id, created_at FROM contacts WHERE id = $1").bind(id).fetch_optional(p).await?
        });
        let Some(r) = row else { return Ok(None) };
        // Only the leads the viewer may see: the contact is not found when there is none.
        let sql = format!(
            "SELECT l.id, l.consent_marketing, l.consent_text, l.consent_at FROM leads l WHERE l.contact_id = $1 AND {} ORDER BY l.created_at, l.id",
            self.access_sql(access)
        );
        type ConsentRow = (Uuid, Option<bool>, Option<String>, Option<Ts>);
        let leads: Vec<ConsentRow> = with_read!(&self.db, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(r.id).fetch_all(p).await?
        });
        if leads.is_empty() {
            return Ok(None);
        }
        let lead_ids: Vec<Uuid> = leads.iter().map(|l| l.0).collect();
        let consents = leads
            .into_iter()
            .filter_map(|(lead_id, marketing, text, at)| marketing.map(|marketing| LeadConsent { lead_id, marketing, text, at }))
            .collect();
        let company = match r.company_id {
            Some(c) => with_read!(&self.db, p => {
                sqlx::query_as::<_, Company>("SELECT id, name, inn, kpp, ogrn, okpo, size, industry FROM companies WHERE id = $1").bind(c).fetch_optional(p).await?
            }),
            None => None,
        };
        Ok(Some(Contact {
            id: r.id,
            name: r.name,
            phone: r.phone,
            email: r.email,
            messenger: r.messenger,
            position: r.position,
            company_id: r.company_id,
            created_at: r.created_at,
            lead_ids,
            consents,
            company,
        }))
    }

    /// The timelines of the contact's leads the viewer may see, as one, newest first;
    /// `None` when the contact is not found for the viewer.
    pub async fn contact_timeline(
        &self,
        id: Uuid,
        access: &Access,
        limit: u32,
        before: Option<(Ts, i64)>,
    ) -> Result<Option<crate::TimelinePage>, StoreError> {
        let Some(c) = self.contact(id, access).await? else { return Ok(None) };
        Ok(Some(self.timeline_of(&c.lead_ids, limit, before).await?))
    }
}
