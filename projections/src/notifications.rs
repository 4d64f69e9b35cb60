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
use kabinet_domain::appointments::{
    Appointment, AppointmentEvent, BookedSlot, ChangedBy, Referral, ReferralEvent,
};
use kabinet_domain::documents::{DocumentRequest, DocumentRequestEvent};
use kabinet_domain::notifications::{
    NotificationChannel, NotificationEvent, NotificationSettings, Preferences,
};
use kabinet_domain::policies::{Policy, PolicyEvent};
use kabinet_domain::prescriptions::{Prescription, PrescriptionEvent};
use kabinet_domain::{Backend, Db, JournalOrder, RecordedEvent};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::{push_keyset, Cursor, Page, PageRequest};
use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

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

/// An event people are told about, decoded into its aggregate's event enum.
#[derive(Debug, Clone, PartialEq)]
pub enum Told {
    Appointment(AppointmentEvent),
    Referral(ReferralEvent),
    DocumentRequest(DocumentRequestEvent),
    Prescription(PrescriptionEvent),
    Policy(PolicyEvent),
}

impl Told {
    /// Decodes `event` when its aggregate is one whose events people are told
    /// about; `None` for the other aggregate types.
    pub fn decode(event: &RecordedEvent) -> Result<Option<Told>, ProjectionError> {
        Ok(if let Some(e) = event_of::<Appointment>(NAME, event)? {
            Some(Told::Appointment(e))
        } else if let Some(e) = event_of::<Referral>(NAME, event)? {
            Some(Told::Referral(e))
        } else if let Some(e) = event_of::<DocumentRequest>(NAME, event)? {
            Some(Told::DocumentRequest(e))
        } else if let Some(e) = event_of::<Prescription>(NAME, event)? {
            Some(Told::Prescription(e))
        } else {
            event_of::<Policy>(NAME, event)?.map(Told::Policy)
        })
    }
}

/// `DD.MM.YYYY в HH:MM` of an instant in the organisation's zone.
fn local_when(slot: &BookedSlot) -> Option<String> {
    let zone: Tz = slot.time_zone.parse().ok()?;
    Some(
        slot.start
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
    fn of_slot(&self, slot: &BookedSlot) -> String {
        let mut words = String::new();
        if let Some(doctor) = self.doctors.get(&slot.doctor_id) {
            words.push_str(&format!(" Врач: {doctor}."));
        }
        if let Some((name, address)) = self.organisations.get(&slot.organisation_id) {
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
pub fn draft(event: &Told, names: &Names) -> Option<Draft> {
    use AppointmentEvent as A;
    use DocumentRequestEvent as D;
    use PolicyEvent as Po;
    use PrescriptionEvent as Pr;
    use ReferralEvent as R;
    let because = |reason: Option<&str>| {
        reason
            .map(|r| format!(" Причина: {r}."))
            .unwrap_or_default()
    };
    let (account_id, kind, title, message) = match event {
        Told::Appointment(A::AppointmentBooked {
            patient_id, slot, ..
        }) => (
            *patient_id,
            "appointment_booked",
            "Запись подтверждена".to_string(),
            format!(
                "Вы записаны на приём {}, кабинет {}.{}",
                local_when(slot)?,
                slot.room,
                names.of_slot(slot)
            ),
        ),
        Told::Appointment(A::AppointmentRescheduled {
            patient_id, slot, ..
        }) => (
            *patient_id,
            "appointment_rescheduled",
            "Время приёма изменено".to_string(),
            format!(
                "Приём перенесён на {}, кабинет {}.{}",
                local_when(slot)?,
                slot.room,
                names.of_slot(slot)
            ),
        ),
        Told::Appointment(A::AppointmentCancelled {
            patient_id,
            reason,
            by,
            ..
        }) => {
            let who = match by {
                ChangedBy::Clinic => "Медицинская организация отменила вашу запись.",
                ChangedBy::Patient => "Ваша запись отменена.",
            };
            (
                *patient_id,
                "appointment_cancelled",
                "Запись отменена".to_string(),
                format!("{who}{}", because(reason.as_deref())),
            )
        }
        Told::Appointment(A::VisitFulfilled { patient_id, .. }) => (
            *patient_id,
            "visit_fulfilled",
            "Итоги приёма".to_string(),
            "Врач внёс итоги приёма: они доступны в истории посещений.".to_string(),
        ),
        Told::Appointment(
            A::PatientArrived { .. } | A::PatientDidNotCome { .. } | A::ReviewLeft { .. },
        ) => return None,
        Told::Referral(R::ReferralApproved { patient_id, .. }) => (
            *patient_id,
            "referral_approved",
            "Направление".to_string(),
            "Ваш запрос направления одобрен.".to_string(),
        ),
        Told::Referral(R::ReferralRejected { patient_id, .. }) => (
            *patient_id,
            "referral_rejected",
            "Направление".to_string(),
            "Ваш запрос направления отклонён.".to_string(),
        ),
        Told::Referral(R::ReferralRequested { .. }) => return None,
        Told::DocumentRequest(D::DocumentRequestFulfilled { patient_id, .. }) => (
            *patient_id,
            "document_ready",
            "Документ готов".to_string(),
            "Запрошенный медицинский документ готов и доступен в личном кабинете.".to_string(),
        ),
        Told::DocumentRequest(D::DocumentRequestRejected {
            patient_id, text, ..
        }) => (
            *patient_id,
            "document_rejected",
            "Запрос документа отклонён".to_string(),
            format!(
                "Медицинская организация отклонила запрос документа.{} Запрос можно подать повторно.",
                because(Some(text))
            ),
        ),
        Told::DocumentRequest(
            D::DocumentRequested { .. }
            | D::DocumentRequestStarted { .. }
            | D::DocumentSentToClinic { .. },
        ) => return None,
        Told::Prescription(Pr::PrescriptionIssued {
            patient_id,
            medication,
            ..
        }) => (
            *patient_id,
            "prescription_issued",
            "Выписан электронный рецепт".to_string(),
            format!(
                "Врач выписал рецепт: {}. Его можно распечатать или отправить в аптеку.",
                medication.name
            ),
        ),
        Told::Prescription(Pr::PrescriptionReadyAtPharmacy { patient_id, .. }) => (
            *patient_id,
            "prescription_ready",
            "Лекарство готово к выдаче".to_string(),
            "Аптека подготовила лекарство по вашему рецепту: его можно забрать.".to_string(),
        ),
        Told::Prescription(Pr::PrescriptionCancelled {
            patient_id, reason, ..
        }) => (
            *patient_id,
            "prescription_cancelled",
            "Рецепт отменён".to_string(),
            format!("Рецепт отменён.{}", because(Some(reason))),
        ),
        Told::Prescription(Pr::PrescriptionExpired { patient_id, .. }) => (
            *patient_id,
            "prescription_expired",
            "Срок действия рецепта истёк".to_string(),
            "Срок действия рецепта истёк; за новым обратитесь к врачу.".to_string(),
        ),
        Told::Prescription(Pr::PrescriptionRequestApproved { patient_id, .. }) => (
            *patient_id,
            "prescription_request_approved",
            "Запрос по рецепту рассмотрен".to_string(),
            "Врач одобрил ваш запрос по рецепту.".to_string(),
        ),
        Told::Prescription(Pr::PrescriptionRequestDeclined { patient_id, .. }) => (
            *patient_id,
            "prescription_request_declined",
            "Запрос по рецепту рассмотрен".to_string(),
            "Врач отклонил ваш запрос по рецепту.".to_string(),
        ),
        Told::Prescription(
            Pr::PrescriptionSentToPharmacy { .. }
            | Pr::PrescriptionDispensed { .. }
            | Pr::PrescriptionResendRequested { .. }
            | Pr::PrescriptionCancellationRequested { .. },
        ) => return None,
        Told::Policy(Po::PolicyIssued {
            patient_id, number, ..
        }) => (
            *patient_id,
            "policy_issued",
            "Полис ОМС оформлен".to_string(),
            format!(
                "Полис ОМС оформлен, номер {}. Он доступен в личном кабинете.",
                number.as_str()
            ),
        ),
        Told::Policy(Po::PolicyApplicationRejected {
            patient_id, reason, ..
        }) => (
            *patient_id,
            "policy_rejected",
            "Заявление на полис ОМС отклонено".to_string(),
            format!("Заявление на полис ОМС отклонено.{}", because(Some(reason))),
        ),
        Told::Policy(Po::PolicyRenewalDue {
            patient_id,
            valid_until,
            ..
        }) => (
            *patient_id,
            "policy_renewal_due",
            "Пора продлить полис ОМС".to_string(),
            format!(
                "Срок действия полиса ОМС заканчивается {}: подайте заявление на продление.",
                valid_until.format("%d.%m.%Y")
            ),
        ),
        Told::Policy(Po::PolicyExpired { patient_id, .. }) => (
            *patient_id,
            "policy_expired",
            "Срок действия полиса ОМС истёк".to_string(),
            "Срок действия полиса ОМС истёк: подайте заявление на новый.".to_string(),
        ),
        Told::Policy(Po::PolicyApplied { .. }) => return None,
    };
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
        let mut told = Vec::new();
        for event in events {
            if let Some(decoded) = Told::decode(event)? {
                told.push((event, decoded));
            }
        }
        let names = names_in(tx, &told).await?;
        let drafts: Vec<(&RecordedEvent, Draft)> = told
            .iter()
            .filter_map(|(e, t)| draft(t, &names).map(|d| (*e, d)))
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
    told: &[(&RecordedEvent, Told)],
) -> Result<Names, ProjectionError> {
    let mut doctor_ids = BTreeSet::new();
    let mut organisation_ids = BTreeSet::new();
    for (_, event) in told {
        if let Told::Appointment(
            AppointmentEvent::AppointmentBooked { slot, .. }
            | AppointmentEvent::AppointmentRescheduled { slot, .. },
        ) = event
        {
            doctor_ids.insert(slot.doctor_id.to_string());
            organisation_ids.insert(slot.organisation_id.to_string());
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
        for event in events {
            let Some(NotificationEvent::NotificationPreferencesChanged(preferences)) =
                event_of::<NotificationSettings>(PREFERENCES, event)?
            else {
                continue;
            };
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

/// What the dispatcher has yet to send: notifications with no delivery record
/// at all, and deliveries waiting for another attempt (failed, or claimed by a
/// sender that has not finished).
pub async fn dispatch_backlog(db: &Db) -> Result<(i64, i64), sqlx::Error> {
    const NEW: &str = "SELECT COUNT(*) FROM notifications n WHERE NOT EXISTS \
        (SELECT 1 FROM notification_deliveries d WHERE d.position = n.position AND d.account_id = n.account_id)";
    const RETRY: &str =
        "SELECT COUNT(*) FROM notification_deliveries WHERE status IN ('failed', 'sending')";
    kabinet_domain::on_db!(db, pool => {
        let new: i64 = sqlx::query_scalar(NEW).fetch_one(pool).await?;
        let retry: i64 = sqlx::query_scalar(RETRY).fetch_one(pool).await?;
        Ok((new, retry))
    })
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
    use kabinet_domain::appointments::{AppointmentStatus, ChangedBy};
    use kabinet_domain::prescriptions::PrescriptionStatus;

    use super::*;

    fn booked(patient: Uuid, doctor: Uuid, clinic: Uuid) -> Told {
        let start: DateTime<Utc> = "2026-12-03T07:30:00Z".parse().expect("instant");
        Told::Appointment(AppointmentEvent::AppointmentBooked {
            patient_id: patient,
            slot: BookedSlot {
                doctor_id: doctor,
                organisation_id: clinic,
                period_id: Uuid::now_v7(),
                start,
                end: start + chrono::Duration::minutes(30),
                day: start.date_naive(),
                time_zone: "Europe/Moscow".to_string(),
                room: "205".to_string(),
                change_cutoff_hours: 24,
            },
            service_code: None,
            by: ChangedBy::Patient,
            status: AppointmentStatus::Booked,
        })
    }

    #[test]
    fn a_booking_confirmation_gives_local_date_time_and_room() {
        let patient = Uuid::now_v7();
        let (doctor, clinic) = (Uuid::now_v7(), Uuid::now_v7());
        let booked = booked(patient, doctor, clinic);
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
        let ready = draft(
            &Told::Prescription(PrescriptionEvent::PrescriptionReadyAtPharmacy {
                patient_id: patient,
                pharmacy_id: Uuid::now_v7(),
                status: PrescriptionStatus::ReadyAtPharmacy,
            }),
            &Names::default(),
        )
        .expect("a message");
        assert_eq!(
            (ready.account_id, ready.kind),
            (patient, "prescription_ready")
        );
        let due = draft(
            &Told::Policy(PolicyEvent::PolicyRenewalDue {
                patient_id: patient,
                valid_until: "2027-03-31".parse().expect("date"),
                days_left: 30,
            }),
            &Names::default(),
        )
        .expect("a message");
        assert!(due.body.contains("31.03.2027"), "{}", due.body);
    }

    #[test]
    fn events_nobody_is_told_about_make_no_message() {
        assert_eq!(
            draft(
                &Told::Appointment(AppointmentEvent::PatientArrived {
                    patient_id: Uuid::now_v7(),
                    status: AppointmentStatus::Arrived,
                }),
                &Names::default()
            ),
            None
        );
    }

    #[test]
    fn a_stored_event_decodes_into_its_aggregates_enum_or_names_itself() {
        use kabinet_domain::journal::chain::Hash;
        let told = booked(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let Told::Appointment(inner) = &told else {
            unreachable!("built as an appointment event")
        };
        let recorded = |aggregate_type: &str, payload: serde_json::Value| RecordedEvent {
            order: JournalOrder { tx: 1, position: 7 },
            recorded_at: Utc::now(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: Uuid::now_v7().to_string(),
            sequence: 1,
            event_type: "AppointmentBooked".into(),
            event_version: "1".into(),
            payload,
            metadata: serde_json::json!({}),
            hash: Hash::default(),
        };
        let stored = serde_json::to_value(inner).expect("serialises");
        assert_eq!(
            Told::decode(&recorded("appointment", stored.clone())).expect("decodes"),
            Some(told)
        );
        assert_eq!(
            Told::decode(&recorded("doctor_rating", stored)).expect("not ours"),
            None
        );
        let broken = recorded(
            "appointment",
            serde_json::json!({ "AppointmentBooked": { "patient_id": "nobody" } }),
        );
        match Told::decode(&broken) {
            Err(ProjectionError::BadEvent {
                projection,
                event_type,
                position,
                ..
            }) => assert_eq!(
                (projection, event_type.as_str(), position),
                (NAME, "AppointmentBooked", 7)
            ),
            other => panic!("expected a bad event, got {other:?}"),
        }
    }
}
