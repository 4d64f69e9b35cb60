//! Notifications (F1): what a person is told about the events that concern
//! them, and the channels and addresses they chose.
//!
//! The `notifications` read model turns journal events into messages exactly
//! once (the projector's checkpoint), so a rebuild gives the same messages with
//! the same ids; delivery is the dispatcher's job, recorded in
//! `notification_deliveries` keyed by those ids, so a rebuild never re-sends.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kabinet_domain::notifications::{NotificationChannel, Preferences};
use kabinet_domain::{Backend, Db, JournalOrder, RecordedEvent};
use serde_json::Value;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::{push_keyset, Cursor, Page, PageRequest};
use crate::projection::{
    decode, from_micros, micros, variant_body, Projection, ProjectionError, ProjectionTx,
};

/// Name of the notifications projection and of its table.
pub const NAME: &str = "notifications";
/// Name of the preferences projection and of its table.
pub const PREFERENCES: &str = "notification_preferences";

/// The notifications projection.
pub struct Notifications;

/// The notification preferences projection.
pub struct NotificationPreferences;

/// A message about one event, for one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationView {
    /// The journal position of the event it tells about: its id.
    pub position: i64,
    pub account_id: Uuid,
    /// Stable kind, e.g. `appointment_booked`.
    pub kind: String,
    pub title: String,
    pub body: String,
    pub object_type: String,
    pub object_id: String,
    pub created_at: DateTime<Utc>,
}

/// A message the catalogue makes of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub account_id: Uuid,
    pub kind: &'static str,
    pub title: String,
    pub body: String,
}

fn text<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

fn uuid_at(body: &Value, name: &str) -> Option<Uuid> {
    text(body, name).and_then(|s| Uuid::parse_str(s).ok())
}

/// `DD.MM.YYYY в HH:MM` of an instant in the organisation's zone.
fn local_when(slot: &Value) -> Option<String> {
    let start: DateTime<Utc> = text(slot, "start")?.parse().ok()?;
    let zone: Tz = text(slot, "time_zone")?.parse().ok()?;
    Some(
        start
            .with_timezone(&zone)
            .format("%d.%m.%Y в %H:%M")
            .to_string(),
    )
}

/// Names of doctors and organisations a batch of messages mentions, read from
/// the directory's read models when the batch is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Full name of each doctor.
    pub doctors: HashMap<Uuid, String>,
    /// Name and address of each organisation.
    pub organisations: HashMap<Uuid, (String, String)>,
}

impl Names {
    /// ` Врач: …. Клиника, адрес.` for a booked slot, each part only when known.
    fn of_slot(&self, slot: &Value) -> String {
        let mut words = String::new();
        if let Some(doctor) = uuid_at(slot, "doctor_id").and_then(|d| self.doctors.get(&d)) {
            words.push_str(&format!(" Врач: {doctor}."));
        }
        if let Some((name, address)) =
            uuid_at(slot, "organisation_id").and_then(|o| self.organisations.get(&o))
        {
            if address.trim().is_empty() {
                words.push_str(&format!(" {name}."));
            } else {
                words.push_str(&format!(" {name}, {address}."));
            }
        }
        words
    }
}

/// Whether messages of `kind` tell medical details (a medication, a document,
/// a policy, a referral, a visit's outcome): a patient whose identity is not
/// verified is shown [`neutral`] words instead, on screen and on every channel.
pub fn tells_medical_details(kind: &str) -> bool {
    kind.starts_with("prescription_")
        || kind.starts_with("document_")
        || kind.starts_with("policy_")
        || kind.starts_with("referral_")
        || kind == "visit_fulfilled"
}

/// Title and text that say something new is waiting, without saying what.
pub fn neutral() -> (String, String) {
    (
        "Новое сообщение в личном кабинете".to_string(),
        "В личном кабинете появились новые сведения. Они откроются после подтверждения личности."
            .to_string(),
    )
}

/// The catalogue: which events a person is told about, and the words.
///
/// Messages are in Russian, the product's language; each kind is stable so
/// frontends may show their own words instead. Visits name the doctor and the
/// organisation with its address, when `names` know them.
pub fn draft(event: &RecordedEvent, names: &Names) -> Option<Draft> {
    let body = variant_body(event)?;
    let patient = uuid_at(body, "patient_id");
    let by_clinic = text(body, "by") == Some("clinic");
    let (kind, title, message) = match event.event_type.as_str() {
        "AppointmentBooked" => {
            let slot = body.get("slot")?;
            let when = local_when(slot)?;
            let room = text(slot, "room").unwrap_or("");
            let whom = names.of_slot(slot);
            (
                "appointment_booked",
                "Запись подтверждена".to_string(),
                format!("Вы записаны на приём {when}, кабинет {room}.{whom}"),
            )
        }
        "AppointmentRescheduled" => {
            let slot = body.get("slot")?;
            let when = local_when(slot)?;
            let room = text(slot, "room").unwrap_or("");
            let whom = names.of_slot(slot);
            (
                "appointment_rescheduled",
                "Время приёма изменено".to_string(),
                format!("Приём перенесён на {when}, кабинет {room}.{whom}"),
            )
        }
        "AppointmentCancelled" => {
            let reason = text(body, "reason")
                .map(|r| format!(" Причина: {r}."))
                .unwrap_or_default();
            let who = if by_clinic {
                "Медицинская организация отменила вашу запись."
            } else {
                "Ваша запись отменена."
            };
            (
                "appointment_cancelled",
                "Запись отменена".to_string(),
                format!("{who}{reason}"),
            )
        }
        "VisitFulfilled" => (
            "visit_fulfilled",
            "Итоги приёма".to_string(),
            "Врач внёс итоги приёма: они доступны в истории посещений.".to_string(),
        ),
        "ReferralApproved" | "ReferralRejected" => {
            let approved = event.event_type == "ReferralApproved";
            (
                if approved {
                    "referral_approved"
                } else {
                    "referral_rejected"
                },
                "Направление".to_string(),
                if approved {
                    "Ваш запрос направления одобрен.".to_string()
                } else {
                    "Ваш запрос направления отклонён.".to_string()
                },
            )
        }
        "DocumentRequestFulfilled" => (
            "document_ready",
            "Документ готов".to_string(),
            "Запрошенный медицинский документ готов и доступен в личном кабинете.".to_string(),
        ),
        "DocumentRequestRejected" => {
            let reason = text(body, "text")
                .map(|r| format!(" Причина: {r}."))
                .unwrap_or_default();
            (
                "document_rejected",
                "Запрос документа отклонён".to_string(),
                format!("Медицинская организация отклонила запрос документа.{reason} Запрос можно подать повторно."),
            )
        }
        "PrescriptionIssued" => {
            let medication = body
                .get("medication")
                .and_then(|m| text(m, "name"))
                .unwrap_or("лекарство");
            (
                "prescription_issued",
                "Выписан электронный рецепт".to_string(),
                format!("Врач выписал рецепт: {medication}. Его можно распечатать или отправить в аптеку."),
            )
        }
        "PrescriptionReadyAtPharmacy" => (
            "prescription_ready",
            "Лекарство готово к выдаче".to_string(),
            "Аптека подготовила лекарство по вашему рецепту: его можно забрать.".to_string(),
        ),
        "PrescriptionCancelled" => {
            let reason = text(body, "reason")
                .map(|r| format!(" Причина: {r}."))
                .unwrap_or_default();
            (
                "prescription_cancelled",
                "Рецепт отменён".to_string(),
                format!("Рецепт отменён.{reason}"),
            )
        }
        "PrescriptionExpired" => (
            "prescription_expired",
            "Срок действия рецепта истёк".to_string(),
            "Срок действия рецепта истёк; за новым обратитесь к врачу.".to_string(),
        ),
        "PrescriptionRequestApproved" | "PrescriptionRequestDeclined" => {
            let approved = event.event_type == "PrescriptionRequestApproved";
            (
                if approved {
                    "prescription_request_approved"
                } else {
                    "prescription_request_declined"
                },
                "Запрос по рецепту рассмотрен".to_string(),
                if approved {
                    "Врач одобрил ваш запрос по рецепту.".to_string()
                } else {
                    "Врач отклонил ваш запрос по рецепту.".to_string()
                },
            )
        }
        "PolicyIssued" => {
            let number = text(body, "number").unwrap_or("");
            (
                "policy_issued",
                "Полис ОМС оформлен".to_string(),
                format!("Полис ОМС оформлен, номер {number}. Он доступен в личном кабинете."),
            )
        }
        "PolicyApplicationRejected" => {
            let reason = text(body, "reason")
                .map(|r| format!(" Причина: {r}."))
                .unwrap_or_default();
            (
                "policy_rejected",
                "Заявление на полис ОМС отклонено".to_string(),
                format!("Заявление на полис ОМС отклонено.{reason}"),
            )
        }
        "PolicyRenewalDue" => {
            let until = text(body, "valid_until")
                .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
                .map(|d| d.format("%d.%m.%Y").to_string())
                .unwrap_or_default();
            (
                "policy_renewal_due",
                "Пора продлить полис ОМС".to_string(),
                format!("Срок действия полиса ОМС заканчивается {until}: подайте заявление на продление."),
            )
        }
        "PolicyExpired" => (
            "policy_expired",
            "Срок действия полиса ОМС истёк".to_string(),
            "Срок действия полиса ОМС истёк: подайте заявление на новый.".to_string(),
        ),
        _ => return None,
    };
    let account_id = patient.or_else(|| {
        (event.aggregate_type == "patient")
            .then(|| Uuid::parse_str(&event.aggregate_id).ok())
            .flatten()
    })?;
    Some(Draft {
        account_id,
        kind,
        title,
        body: message,
    })
}

#[async_trait]
impl Projection for Notifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                position    BIGINT NOT NULL,
                tx_order    BIGINT NOT NULL,
                account_id  TEXT   NOT NULL,
                kind        TEXT   NOT NULL,
                title       TEXT   NOT NULL,
                body        TEXT   NOT NULL,
                object_type TEXT   NOT NULL,
                object_id   TEXT   NOT NULL,
                created_at  BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (position, account_id)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_account ON {table} (account_id, created_at, position)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_order ON {table} (tx_order, position)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let names = names_in(tx, events).await?;
        let drafts: Vec<(&RecordedEvent, Draft)> = events
            .iter()
            .filter_map(|e| draft(e, &names).map(|d| (e, d)))
            .collect();
        // Nine values a row; stay well under SQLite's bound-parameter limit.
        for chunk in drafts.chunks(1000) {
            let head = format!(
                "INSERT INTO {table} (position, tx_order, account_id, kind, title, body, \
                 object_type, object_id, created_at) "
            );
            crate::on_tx!(tx, conn => {
                let mut q = QueryBuilder::new(head);
                q.push_values(chunk, |mut row, (event, d)| {
                    row.push_bind(event.position())
                        .push_bind(event.order.tx)
                        .push_bind(d.account_id.to_string())
                        .push_bind(d.kind)
                        .push_bind(d.title.clone())
                        .push_bind(d.body.clone())
                        .push_bind(event.aggregate_type.clone())
                        .push_bind(event.aggregate_id.clone())
                        .push_bind(micros(event.recorded_at));
                });
                q.build().execute(&mut **conn).await?;
            });
        }
        Ok(())
    }
}

/// The doctors and organisations of the visits booked or moved in `events`,
/// from the directory's read models.
async fn names_in(
    tx: &mut ProjectionTx<'_>,
    events: &[RecordedEvent],
) -> Result<Names, ProjectionError> {
    let mut doctor_ids = BTreeSet::new();
    let mut organisation_ids = BTreeSet::new();
    for event in events {
        if !matches!(
            event.event_type.as_str(),
            "AppointmentBooked" | "AppointmentRescheduled"
        ) {
            continue;
        }
        if let Some(slot) = variant_body(event).and_then(|b| b.get("slot")) {
            doctor_ids.extend(uuid_at(slot, "doctor_id").map(|d| d.to_string()));
            organisation_ids.extend(uuid_at(slot, "organisation_id").map(|o| o.to_string()));
        }
    }
    let mut names = Names::default();
    for (id, details) in
        details_of::<kabinet_domain::directory::DoctorDetails>(tx, crate::doctors::NAME, doctor_ids)
            .await?
    {
        names.doctors.insert(id, details.full_name());
    }
    for (id, details) in details_of::<kabinet_domain::directory::OrganisationDetails>(
        tx,
        crate::organisations::NAME,
        organisation_ids,
    )
    .await?
    {
        names
            .organisations
            .insert(id, (details.name, details.address));
    }
    Ok(names)
}

/// The `details` of the rows of directory read model `table` with the given
/// ids, 500 ids a statement; rows that do not decode are passed over.
async fn details_of<T: serde::de::DeserializeOwned>(
    tx: &mut ProjectionTx<'_>,
    table: &str,
    ids: BTreeSet<String>,
) -> Result<Vec<(Uuid, T)>, ProjectionError> {
    let mut found = Vec::new();
    for chunk in ids.into_iter().collect::<Vec<_>>().chunks(500) {
        let rows: Vec<(String, String)> = crate::on_tx!(tx, conn => {
            let mut q = QueryBuilder::new(format!("SELECT id, details FROM {table} WHERE id IN ("));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            q.push(")");
            q.build_query_as().fetch_all(&mut **conn).await?
        });
        found.extend(rows.into_iter().filter_map(|(id, details)| {
            Some((
                Uuid::parse_str(&id).ok()?,
                serde_json::from_str(&details).ok()?,
            ))
        }));
    }
    Ok(found)
}

#[async_trait]
impl Projection for NotificationPreferences {
    fn name(&self) -> &'static str {
        PREFERENCES
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                account_id TEXT   NOT NULL,
                channels   TEXT   NOT NULL,
                email      TEXT,
                phone      TEXT,
                updated_at BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (account_id)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == "notification_settings")
        {
            let kabinet_domain::notifications::NotificationEvent::NotificationPreferencesChanged(
                preferences,
            ) = decode(event)?;
            let channels = preferences
                .channels
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "INSERT INTO {table} (account_id, channels, email, phone, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO UPDATE SET \
                 channels = excluded.channels, email = excluded.email, phone = excluded.phone, \
                 updated_at = excluded.updated_at"
            );
            crate::on_tx!(tx, conn => {
                sqlx::query(&sql)
                    .bind(&event.aggregate_id)
                    .bind(channels)
                    .bind(preferences.email.as_ref().map(|e| e.as_str().to_string()))
                    .bind(preferences.phone.as_ref().map(|p| p.as_str().to_string()))
                    .bind(micros(event.recorded_at))
                    .execute(&mut **conn)
                    .await?;
            });
        }
        Ok(())
    }
}

/// A person's preferences, if they set any.
pub async fn preferences_of(db: &Db, account: Uuid) -> Result<Option<Preferences>, sqlx::Error> {
    const SQL: &str =
        "SELECT channels, email, phone FROM notification_preferences WHERE account_id = $1";
    let row: Option<(String, Option<String>, Option<String>)> = kabinet_domain::on_db!(db, pool => {
        sqlx::query_as(SQL).bind(account.to_string()).fetch_optional(pool).await?
    });
    Ok(row.map(|(channels, email, phone)| Preferences {
        channels: channels
            .split(',')
            .filter_map(NotificationChannel::parse)
            .collect(),
        // Stored values were parsed before they were recorded.
        email: email.and_then(|e| kabinet_domain::identity::Email::parse(&e).ok()),
        phone: phone.and_then(|p| kabinet_domain::identity::PhoneNumber::parse(&p).ok()),
    }))
}

fn view_of<R: Row>(row: &R) -> Result<NotificationView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let account: String = row.try_get(1)?;
    Ok(NotificationView {
        position: row.try_get(0)?,
        account_id: Uuid::parse_str(&account).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        kind: row.try_get(2)?,
        title: row.try_get(3)?,
        body: row.try_get(4)?,
        object_type: row.try_get(5)?,
        object_id: row.try_get(6)?,
        created_at: from_micros(row.try_get(7)?),
    })
}

const COLUMNS: &str = "position, account_id, kind, title, body, object_type, object_id, created_at";

/// A page of `account`'s notifications, newest first.
pub async fn list(
    db: &Db,
    account: Uuid,
    page: PageRequest,
) -> Result<Page<NotificationView>, sqlx::Error> {
    let account = account.to_string();
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM notifications WHERE account_id = "));
        q.push_bind(&account);
        push_keyset(&mut q, "created_at", page);
        let rows = q.build().fetch_all(pool).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let view = view_of(row)?;
            let cursor = Cursor { at_micros: micros(view.created_at), position: view.position };
            items.push((cursor, view));
        }
        Ok(Page::from_keyset_rows(items, page))
    })
}

/// One notification of `account` by its position.
pub async fn get(
    db: &Db,
    position: i64,
    account: Uuid,
) -> Result<Option<NotificationView>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM notifications WHERE position = $1 AND account_id = $2");
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql)
            .bind(position)
            .bind(account.to_string())
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// How a notification went out on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub position: i64,
    /// `email`, `sms`, or `none` when no channel was chosen.
    pub channel: String,
    /// `sending`, `sent`, `failed`, `gave_up` or `skipped`.
    pub status: String,
    pub attempts: i32,
}

/// The deliveries of `account`'s notifications at `positions`.
pub async fn deliveries_of(
    db: &Db,
    account: Uuid,
    positions: &[i64],
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let account = account.to_string();
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT position, channel, status, attempts FROM notification_deliveries WHERE account_id = ",
        );
        q.push_bind(&account).push(" AND position IN (");
        let mut list = q.separated(", ");
        for p in positions {
            list.push_bind(*p);
        }
        q.push(") ORDER BY position, channel");
        let rows = q.build().fetch_all(pool).await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryView {
                    position: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    status: r.try_get(2)?,
                    attempts: r.try_get(3)?,
                })
            })
            .collect()
    })
}

/// How far the notifications read model has been written: every message of an
/// event at or before this order is in the table.
pub async fn projected_up_to(db: &Db) -> Result<JournalOrder, sqlx::Error> {
    const SQL: &str = "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1";
    let row: Option<(i64, i64)> = kabinet_domain::on_db!(db, pool => {
        sqlx::query_as(SQL).bind(NAME).fetch_optional(pool).await?
    });
    Ok(
        row.map_or(JournalOrder::START, |(tx, position)| JournalOrder {
            tx,
            position,
        }),
    )
}

/// Notifications of events after `after` not yet handed to the dispatcher, in
/// journal order: those with no delivery record at all.
pub async fn undelivered(
    db: &Db,
    after: JournalOrder,
    limit: i64,
) -> Result<Vec<NotificationView>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM notifications n WHERE (n.tx_order > $1 OR (n.tx_order = $1 AND n.position > $2)) \
         AND NOT EXISTS (SELECT 1 FROM notification_deliveries d \
         WHERE d.position = n.position AND d.account_id = n.account_id) \
         ORDER BY n.tx_order, n.position LIMIT $3",
        COLUMNS
            .split(", ")
            .map(|c| format!("n.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    kabinet_domain::on_db!(db, pool => {
        let rows = sqlx::query(&sql)
            .bind(after.tx)
            .bind(after.position)
            .bind(limit)
            .fetch_all(pool)
            .await?;
        rows.iter().map(view_of).collect()
    })
}

#[cfg(test)]
mod tests {
    use kabinet_domain::journal::chain::Hash;
    use serde_json::json;

    use super::*;

    fn event(event_type: &str, body: Value) -> RecordedEvent {
        RecordedEvent {
            order: JournalOrder { tx: 1, position: 7 },
            recorded_at: Utc::now(),
            aggregate_type: "appointment".into(),
            aggregate_id: Uuid::now_v7().to_string(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: json!({ event_type: body }),
            metadata: json!({}),
            hash: Hash::default(),
        }
    }

    #[test]
    fn a_booking_confirmation_gives_local_date_time_and_room() {
        let patient = Uuid::now_v7();
        let (doctor, clinic) = (Uuid::now_v7(), Uuid::now_v7());
        let booked = event(
            "AppointmentBooked",
            json!({ "patient_id": patient, "slot": {
                "doctor_id": doctor, "organisation_id": clinic,
                "start": "2026-12-03T07:30:00Z", "time_zone": "Europe/Moscow", "room": "205" } }),
        );
        let unnamed = draft(&booked, &Names::default()).expect("a message");
        assert_eq!(unnamed.account_id, patient);
        assert_eq!(unnamed.kind, "appointment_booked");
        assert_eq!(
            unnamed.body,
            "Вы записаны на приём 03.12.2026 в 10:30, кабинет 205."
        );
        let mut names = Names::default();
        names
            .doctors
            .insert(doctor, "Иванова Анна Сергеевна".to_string());
        names.organisations.insert(
            clinic,
            ("Поликлиника №3".to_string(), "ул. Тверская, 5".to_string()),
        );
        assert_eq!(
            draft(&booked, &names).expect("a message").body,
            "Вы записаны на приём 03.12.2026 в 10:30, кабинет 205. \
             Врач: Иванова Анна Сергеевна. Поликлиника №3, ул. Тверская, 5."
        );
    }

    #[test]
    fn a_ready_prescription_and_a_renewal_reminder_are_told() {
        let patient = Uuid::now_v7();
        let ready = draft(&event(
            "PrescriptionReadyAtPharmacy",
            json!({ "patient_id": patient, "pharmacy_id": Uuid::now_v7(), "status": "ready_at_pharmacy" }),
        ), &Names::default())
        .expect("a message");
        assert_eq!(
            (ready.account_id, ready.kind),
            (patient, "prescription_ready")
        );
        let due = draft(
            &event(
                "PolicyRenewalDue",
                json!({ "patient_id": patient, "valid_until": "2027-03-31", "days_left": 30 }),
            ),
            &Names::default(),
        )
        .expect("a message");
        assert!(due.body.contains("31.03.2027"), "{}", due.body);
    }

    #[test]
    fn events_nobody_is_told_about_make_no_message() {
        assert_eq!(
            draft(
                &event("PatientArrived", json!({ "patient_id": Uuid::now_v7() })),
                &Names::default()
            ),
            None
        );
    }
}
