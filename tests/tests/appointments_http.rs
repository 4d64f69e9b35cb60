//! Appointments end to end over HTTP: the directory, schedules, booking races,
//! moves and cancellations, the visit and its history — on both backends, and
//! across two server processes.

use chrono::{DateTime, Duration, Timelike, Utc};
use futures::future::join_all;
use kabinet_domain::Role;
use kabinet_tests::clinic::{
    self, doctor_input, organisation_details, patient_profile, publish_schedule, register_doctor,
    register_organisation, register_service, schedule_input, slot_ids, with,
};
use kabinet_tests::conformance;
use kabinet_tests::server::{Client, Server, ServerProcess};
use serde_json::{json, Value};
use uuid::Uuid;

/// A clinic with one organisation, two doctors and a published day.
struct Clinic {
    admin: String,
    registrar: String,
    organisation_id: String,
    organisation_uuid: Uuid,
    doctor_id: String,
    other_doctor_id: String,
    period_id: String,
    /// Free slot ids of the first doctor, in time order.
    slots: Vec<String>,
    other_slots: Vec<String>,
}

const BOOK: &str = "mutation($input: BookAppointmentInput!) { bookAppointment(input: $input) {
    appointment { id status start date time room specialty doctor { fullName } organisation { name } }
    userErrors { field message code } } }";

const RESCHEDULE: &str =
    "mutation($input: RescheduleAppointmentInput!) { rescheduleAppointment(input: $input) {
    appointment { id status start } userErrors { field message code } } }";

const CANCEL: &str =
    "mutation($input: CancelAppointmentInput!) { cancelAppointment(input: $input) {
    appointment { id status cancelReason cancelledBy } userErrors { field message code } } }";

/// A time zone where it is now between 01:00 and 20:00, so a period starting
/// shortly stays within the local day.
fn daytime_zone() -> &'static str {
    let now = Utc::now();
    [
        "Europe/Moscow",
        "Asia/Vladivostok",
        "America/New_York",
        "Asia/Kolkata",
    ]
    .into_iter()
    .find(|zone| {
        let tz: chrono_tz::Tz = zone.parse().expect("zone");
        (1..20).contains(&now.with_timezone(&tz).hour())
    })
    .unwrap_or("Europe/Moscow")
}

fn local_date_time(at: DateTime<Utc>, zone: &str) -> (String, String) {
    let tz: chrono_tz::Tz = zone.parse().expect("zone");
    let local = at.with_timezone(&tz);
    (
        local.format("%Y-%m-%d").to_string(),
        local.format("%H:%M").to_string(),
    )
}

async fn publish(
    client: &Client,
    token: &str,
    doctor_id: &str,
    date: &str,
    start: &str,
    end: &str,
    extra: Value,
) -> Value {
    let input = with(
        schedule_input(doctor_id, date),
        json!({ "start": start, "end": end }),
    );
    publish_schedule(client, token, with(input, extra)).await
}

impl Clinic {
    /// Sets up the clinic; the first doctor's period is tomorrow 09:00–12:00 local time.
    async fn open(client: &Client, zone: &str) -> Clinic {
        let admin = client.token(Role::Admin, None);
        let organisation = register_organisation(
            client,
            &admin,
            with(
                organisation_details("Городская поликлиника №2"),
                json!({ "timeZone": zone, "departments": ["Терапия", "Кардиология"],
                    "specialisations": ["therapist", "cardiologist"] }),
            ),
        )
        .await;
        let (organisation_id, organisation_uuid) = (organisation.id, organisation.uuid);
        register_service(client, &admin, json!(["Полис ОМС"])).await;
        let registrar = client.token(Role::Registrar, Some(organisation_uuid));
        let mut doctors = Vec::new();
        for (surname, specialty) in [("Иванова", "therapist"), ("Петров", "cardiologist")]
        {
            let doctor = with(
                doctor_input(surname, &organisation_id),
                json!({ "specialty": specialty }),
            );
            doctors.push(register_doctor(client, &registrar, doctor).await.id);
        }
        let tomorrow = local_date_time(Utc::now() + Duration::days(1), zone).0;
        let first = publish(
            client,
            &registrar,
            &doctors[0],
            &tomorrow,
            "09:00",
            "12:00",
            json!({}),
        )
        .await;
        assert_eq!(first["userErrors"], json!([]), "{first}");
        let second = publish(
            client,
            &registrar,
            &doctors[1],
            &tomorrow,
            "09:00",
            "12:00",
            json!({}),
        )
        .await;
        Clinic {
            admin,
            registrar,
            organisation_id,
            organisation_uuid,
            doctor_id: doctors[0].clone(),
            other_doctor_id: doctors[1].clone(),
            period_id: first["periodId"].as_str().expect("period").to_string(),
            slots: slot_ids(&first),
            other_slots: slot_ids(&second),
        }
    }
}

/// A patient with a recorded profile (born 1990).
async fn patient(client: &Client) -> (Uuid, String) {
    clinic::patient(
        client,
        with(patient_profile(), json!({ "patronymic": null })),
    )
    .await
}

async fn book(client: &Client, token: &str, slot: &str) -> Value {
    client
        .graphql(Some(token), BOOK, json!({ "input": { "slotId": slot } }))
        .await["data"]["bookAppointment"]
        .clone()
}

fn error_code(payload: &Value) -> Option<&str> {
    payload["userErrors"][0]["code"].as_str()
}

async fn journal_count(db: &kabinet_domain::Db, event_type: &str) -> i64 {
    kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(pool)
            .await
            .expect("count")
    })
}

conformance!(
    a_patient_finds_books_moves_and_cancels,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let zone = "Europe/Moscow";
        let clinic = Clinic::open(&server, zone).await;
        let (_, token) = patient(&server).await;

        // Search: by specialty, surname and service; with rating and next free slot.
        let found = server
        .data(
            None,
            "{ doctors(filter: { specialty: \"therapist\", surname: \"иван\", serviceCode: \"b01.047.001\" }) {
                edges { node { id fullName rating nextFreeSlot { id } organisation { name } } } } }",
            json!({}),
        )
        .await;
        let doctor = &found["doctors"]["edges"][0]["node"];
        assert_eq!(doctor["fullName"], "Иванова Анна Сергеевна");
        assert_eq!(doctor["nextFreeSlot"]["id"], json!(clinic.slots[0]));

        let tomorrow = local_date_time(Utc::now() + Duration::days(1), zone).0;
        let free = server
        .data(None, "query($d: ID!, $f: String!) { freeSlots(doctorId: $d, from: $f, to: $f) { id time date room } }",
            json!({ "d": clinic.doctor_id, "f": tomorrow }))
        .await;
        assert_eq!(free["freeSlots"].as_array().map(Vec::len), Some(9));
        assert_eq!(free["freeSlots"][0]["time"], "09:00");

        let booked = book(&server, &token, &clinic.slots[0]).await;
        assert_eq!(booked["userErrors"], json!([]), "{booked}");
        let appointment = &booked["appointment"];
        assert_eq!(appointment["status"], "BOOKED");
        assert_eq!(appointment["time"], "09:00");
        assert_eq!(appointment["room"], "214");
        assert_eq!(appointment["specialty"], "therapist");
        assert_eq!(appointment["doctor"]["fullName"], "Иванова Анна Сергеевна");
        let id = appointment["id"].as_str().expect("id").to_string();

        let moved = server
            .graphql(
                Some(&token),
                RESCHEDULE,
                json!({ "input": { "appointmentId": id, "slotId": clinic.slots[3] } }),
            )
            .await;
        assert_eq!(
            moved["data"]["rescheduleAppointment"]["userErrors"],
            json!([]),
            "{moved}"
        );
        let free = server
            .data(
                None,
                "query($d: ID!, $f: String!) { freeSlots(doctorId: $d, from: $f, to: $f) { id } }",
                json!({ "d": clinic.doctor_id, "f": tomorrow }),
            )
            .await;
        let free: Vec<&str> = free["freeSlots"]
            .as_array()
            .expect("slots")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert!(
            free.contains(&clinic.slots[0].as_str()),
            "the old slot is free again"
        );
        assert!(
            !free.contains(&clinic.slots[3].as_str()),
            "the new slot is held"
        );

        let upcoming = server
        .data(Some(&token), "{ myAppointments(filter: { when: UPCOMING }) { edges { node { id time status } } } }", json!({}))
        .await;
        assert_eq!(
            upcoming["myAppointments"]["edges"][0]["node"]["time"],
            "10:00"
        );

        let cancelled = server
            .graphql(
                Some(&token),
                CANCEL,
                json!({ "input": { "appointmentId": id, "reason": "Планы изменились" } }),
            )
            .await;
        let cancelled = &cancelled["data"]["cancelAppointment"]["appointment"];
        assert_eq!(cancelled["status"], "CANCELLED");
        assert_eq!(cancelled["cancelledBy"], "PATIENT");
        let lists = server
        .data(Some(&token), "{ up: myAppointments(filter: { when: UPCOMING }) { edges { node { id } } }
                               gone: myAppointments(filter: { when: CANCELLED }) { edges { node { id cancelReason } } } }", json!({}))
        .await;
        assert_eq!(lists["up"]["edges"], json!([]));
        assert_eq!(
            lists["gone"]["edges"][0]["node"]["cancelReason"],
            "Планы изменились"
        );

        let log = server
            .data(
                Some(&token),
                "{ activityLog(first: 10) { edges { node { action status } } } }",
                json!({}),
            )
            .await;
        let actions: Vec<&str> = log["activityLog"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter_map(|e| e["node"]["action"].as_str())
            .collect();
        assert_eq!(
            actions,
            [
                "AppointmentCancelled",
                "AppointmentRescheduled",
                "AppointmentBooked",
                "PatientProfileRecorded"
            ]
        );
        server.stop().await;
    }
);

conformance!(
    fifty_patients_racing_for_one_slot_get_one_booking,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Europe/Moscow").await;
        let mut tokens = Vec::new();
        for _ in 0..50 {
            tokens.push(patient(&server).await.1);
        }
        let slot = clinic.slots[2].clone();
        let attempts = tokens.iter().map(|token| {
            let client = server.client.clone();
            let slot = slot.clone();
            let token = token.clone();
            tokio::spawn(async move { book(&client, &token, &slot).await })
        });
        let results: Vec<Value> = join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let won = results
            .iter()
            .filter(|r| r["appointment"]["id"].is_string())
            .count();
        let taken = results
            .iter()
            .filter(|r| error_code(r) == Some("SLOT_TAKEN"))
            .count();
        assert_eq!((won, taken), (1, 49), "{results:?}");
        assert_eq!(journal_count(&test_db.db, "AppointmentBooked").await, 1);
        server.stop().await;
    }
);

conformance!(
    a_patient_gets_no_overlapping_or_duplicate_bookings,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Europe/Moscow").await;
        let (_, token) = patient(&server).await;
        assert_eq!(
            book(&server, &token, &clinic.slots[0]).await["userErrors"],
            json!([])
        );
        // Same time with another doctor.
        assert_eq!(
            error_code(&book(&server, &token, &clinic.other_slots[0]).await),
            Some("OVERLAPPING_BOOKING")
        );
        // Same doctor, same day, another time.
        assert_eq!(
            error_code(&book(&server, &token, &clinic.slots[5]).await),
            Some("DUPLICATE_BOOKING")
        );
        // Racing for both at once still yields one overlapping pair at most.
        let (_, racer) = patient(&server).await;
        let a = book(&server, &racer, &clinic.slots[1]);
        let b = book(&server, &racer, &clinic.other_slots[1]);
        let (a, b) = tokio::join!(a, b);
        let wins = [&a, &b]
            .iter()
            .filter(|r| r["appointment"]["id"].is_string())
            .count();
        assert_eq!(wins, 1, "{a} {b}");
        server.stop().await;
    }
);

conformance!(
    a_reschedule_is_all_or_nothing_and_a_full_day_says_so,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Europe/Moscow").await;
        let (_, alice) = patient(&server).await;
        let (_, bob) = patient(&server).await;
        let mine = book(&server, &alice, &clinic.slots[0]).await;
        let id = mine["appointment"]["id"].as_str().expect("id").to_string();
        assert_eq!(
            book(&server, &bob, &clinic.slots[1]).await["userErrors"],
            json!([])
        );

        let refused = server
            .graphql(
                Some(&alice),
                RESCHEDULE,
                json!({ "input": { "appointmentId": id, "slotId": clinic.slots[1] } }),
            )
            .await;
        assert_eq!(
            error_code(&refused["data"]["rescheduleAppointment"]),
            Some("SLOT_TAKEN")
        );
        let still = server
            .data(
                Some(&alice),
                "query($id: ID!) { node(id: $id) { ... on Appointment { status time } } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            still["node"],
            json!({ "status": "BOOKED", "time": "09:00" })
        );

        // Another doctor's slot is refused outright.
        let other = server
            .graphql(
                Some(&alice),
                RESCHEDULE,
                json!({ "input": { "appointmentId": id, "slotId": clinic.other_slots[4] } }),
            )
            .await;
        assert_eq!(
            error_code(&other["data"]["rescheduleAppointment"]),
            Some("SLOT_OF_ANOTHER_DOCTOR")
        );

        // A day whose every slot is held: DAY_FULL.
        let day = local_date_time(Utc::now() + Duration::days(2), "Europe/Moscow").0;
        let small = publish(
            &server,
            &clinic.registrar,
            &clinic.doctor_id,
            &day,
            "09:00",
            "09:20",
            json!({}),
        )
        .await;
        let only = small["slots"][0]["id"].as_str().expect("slot").to_string();
        let (_, carol) = patient(&server).await;
        assert_eq!(book(&server, &carol, &only).await["userErrors"], json!([]));
        let full = server
            .graphql(
                Some(&alice),
                RESCHEDULE,
                json!({ "input": { "appointmentId": id, "slotId": only } }),
            )
            .await;
        assert_eq!(
            error_code(&full["data"]["rescheduleAppointment"]),
            Some("DAY_FULL"),
            "{full}"
        );
        server.stop().await;
    }
);

conformance!(
    concurrent_moves_and_cancels_leave_one_consistent_outcome,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Europe/Moscow").await;
        let (_, token) = patient(&server).await;
        let booked = book(&server, &token, &clinic.slots[0]).await;
        let id = booked["appointment"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let mut tasks = Vec::new();
        for (i, slot) in clinic.slots.iter().enumerate().skip(1) {
            let (client, token, id, slot) = (
                server.client.clone(),
                token.clone(),
                id.clone(),
                slot.clone(),
            );
            tasks.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    client
                        .graphql(
                            Some(&token),
                            CANCEL,
                            json!({ "input": { "appointmentId": id } }),
                        )
                        .await
                } else {
                    client
                        .graphql(
                            Some(&token),
                            RESCHEDULE,
                            json!({ "input": { "appointmentId": id, "slotId": slot } }),
                        )
                        .await
                }
            }));
        }
        for result in join_all(tasks).await {
            let response = result.expect("task");
            assert!(response.get("errors").is_none(), "{response}");
        }
        let state = server
            .data(
                Some(&token),
                "query($id: ID!) { node(id: $id) { ... on Appointment { status start } } }",
                json!({ "id": id }),
            )
            .await;
        let tomorrow = local_date_time(Utc::now() + Duration::days(1), "Europe/Moscow").0;
        let slots = server
        .data(None, "query($d: ID!, $f: String!) { freeSlots(doctorId: $d, from: $f, to: $f) { id start } }",
            json!({ "d": clinic.doctor_id, "f": tomorrow }))
        .await;
        let free = slots["freeSlots"].as_array().expect("slots").len();
        // Every slot but the one the appointment holds is free, and the holds match.
        let held: i64 = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE scope = 'slot'").fetch_one(pool).await.expect("count")
        });
        if state["node"]["status"] == "CANCELLED" {
            assert_eq!((free, held), (9, 0), "{state}");
        } else {
            assert_eq!(state["node"]["status"], "BOOKED");
            assert_eq!((free, held), (8, 1), "{state}");
            let start = state["node"]["start"].as_str().expect("start");
            assert!(!slots["freeSlots"]
                .as_array()
                .expect("slots")
                .iter()
                .any(|s| s["start"] == start));
        }
        server.stop().await;
    }
);

conformance!(
    closing_a_period_cancels_its_appointments_on_the_clinics_side,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Europe/Moscow").await;
        let (_, token) = patient(&server).await;
        let booked = book(&server, &token, &clinic.slots[4]).await;
        let id = booked["appointment"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let closed = server
        .data(Some(&clinic.registrar), "mutation($input: CloseSchedulePeriodInput!) { closeSchedulePeriod(input: $input) {
                cancelledAppointments userErrors { code message } } }",
            json!({ "input": { "doctorId": clinic.doctor_id, "periodId": clinic.period_id, "reason": "больничный" } }))
        .await;
        assert_eq!(
            closed["closeSchedulePeriod"]["cancelledAppointments"], 1,
            "{closed}"
        );
        let seen = server
        .data(Some(&token), "query($id: ID!) { node(id: $id) { ... on Appointment { status cancelledBy cancelReason } } }", json!({ "id": id }))
        .await;
        assert_eq!(seen["node"]["status"], "CANCELLED");
        assert_eq!(seen["node"]["cancelledBy"], "CLINIC");
        assert!(seen["node"]["cancelReason"]
            .as_str()
            .is_some_and(|r| r.contains("больничный")));
        let (_, late) = patient(&server).await;
        assert_eq!(
            error_code(&book(&server, &late, &clinic.slots[0]).await),
            Some("SLOT_NOT_FOUND")
        );
        server.stop().await;
    }
);

conformance!(
    a_visit_is_recorded_listed_and_reviewed_once,
    |test_db| async move {
        let clock = kabinet_domain::clock::FixedClock::new(Utc::now());
        let server =
            Server::start_with_clock(&test_db, std::sync::Arc::new(clock.clone()), |_| {}).await;
        let clinic = Clinic::open(&server, "Europe/Moscow").await;
        let (_, token) = patient(&server).await;
        let booked = book(&server, &token, &clinic.slots[0]).await;
        let id = booked["appointment"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        // The outcome is recorded at the visit, not before it.
        let start = booked["appointment"]["start"].as_str().expect("start");
        clock.set(
            DateTime::parse_from_rfc3339(start)
                .expect("start instant")
                .with_timezone(&Utc)
                + Duration::minutes(5),
        );
        let doctor = server.token(Role::Doctor, Some(clinic.organisation_uuid));
        let fulfilled = server
        .data(Some(&doctor), "mutation($input: FulfilVisitInput!) { fulfilVisit(input: $input) {
                appointment { status outcome { diagnosisCode } } userErrors { field code message } } }",
            json!({ "input": { "appointmentId": id, "diagnosisCode": "j06.9", "diagnosisText": "ОРВИ",
                "recommendations": "Обильное питьё", "prescriptions": ["RX-1"], "referrals": ["cardiologist"] } }))
        .await;
        assert_eq!(
            fulfilled["fulfilVisit"]["appointment"]["outcome"]["diagnosisCode"], "J06.9",
            "{fulfilled}"
        );
        let bad_code = server
        .data(Some(&doctor), "mutation($input: FulfilVisitInput!) { fulfilVisit(input: $input) { userErrors { field code } } }",
            json!({ "input": { "appointmentId": id, "diagnosisCode": "ЖЖЖ", "diagnosisText": "x" } }))
        .await;
        assert_eq!(
            bad_code["fulfilVisit"]["userErrors"][0]["code"],
            "INVALID_STATE"
        );

        // History shows it only to its patient, with everything the doctor recorded.
        let history = server
        .data(Some(&token), "{ visitHistory { edges { node { status specialty outcome { diagnosisText recommendations prescriptions referrals } } } } }", json!({}))
        .await;
        assert_eq!(
            history["visitHistory"]["edges"][0]["node"]["outcome"]["referrals"],
            json!(["cardiologist"])
        );
        let (_, stranger) = patient(&server).await;
        let theirs = server
            .data(
                Some(&stranger),
                "{ visitHistory { edges { node { status } } } }",
                json!({}),
            )
            .await;
        assert_eq!(theirs["visitHistory"]["edges"], json!([]));
        let node = server
            .data(
                Some(&stranger),
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(node["node"], Value::Null);
        let steal = server
            .graphql(
                Some(&stranger),
                CANCEL,
                json!({ "input": { "appointmentId": id } }),
            )
            .await;
        assert_eq!(
            error_code(&steal["data"]["cancelAppointment"]),
            Some("NOT_FOUND")
        );

        let review = "mutation($input: ReviewVisitInput!) { reviewVisit(input: $input) { appointment { reviewRating } userErrors { code } } }";
        let first = server
            .data(
                Some(&token),
                review,
                json!({ "input": { "appointmentId": id, "rating": 5, "text": "Спасибо" } }),
            )
            .await;
        assert_eq!(first["reviewVisit"]["appointment"]["reviewRating"], 5);
        let again = server
            .data(
                Some(&token),
                review,
                json!({ "input": { "appointmentId": id, "rating": 1 } }),
            )
            .await;
        assert_eq!(
            again["reviewVisit"]["userErrors"][0]["code"],
            "CANNOT_REVIEW"
        );
        let rated = server
            .data(
                None,
                "query($id: ID!) { node(id: $id) { ... on Doctor { rating reviewCount } } }",
                json!({ "id": clinic.doctor_id }),
            )
            .await;
        assert_eq!(rated["node"], json!({ "rating": "5.0", "reviewCount": 1 }));

        // Referral: requested by the patient, decided by the clinic, status visible.
        let requested = server
        .data(Some(&token), "mutation($input: RequestReferralInput!) { requestReferral(input: $input) {
                referral { id status } userErrors { code } } }",
            json!({ "input": { "organisationId": clinic.organisation_id, "specialty": "cardiologist", "reason": "Боли в груди" } }))
        .await;
        let referral = requested["requestReferral"]["referral"]["id"]
            .as_str()
            .expect("referral")
            .to_string();
        assert_eq!(
            requested["requestReferral"]["referral"]["status"],
            "PROCESSING"
        );
        let decided = server
        .data(Some(&doctor), "mutation($input: DecideReferralInput!) { decideReferral(input: $input) {
                referral { status decision } userErrors { code } } }",
            json!({ "input": { "referralId": referral, "approve": true, "comment": "Запись через регистратуру" } }))
        .await;
        assert_eq!(decided["decideReferral"]["referral"]["status"], "APPROVED");
        let mine = server
            .data(
                Some(&token),
                "{ myReferralRequests(status: APPROVED) { edges { node { statusLabelRu } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            mine["myReferralRequests"]["edges"][0]["node"]["statusLabelRu"],
            "Одобрено"
        );
        server.stop().await;
    }
);

conformance!(
    time_rules_and_eligibility_are_enforced,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let zone = daytime_zone();
        let clinic = Clinic::open(&server, zone).await;
        // A period starting within the hour: bookable, but past the 2-hour cut-off for changes.
        let soon = Utc::now() + Duration::minutes(15);
        let soon = soon
            - Duration::minutes(soon.minute() as i64 % 5)
            - Duration::seconds(soon.second() as i64);
        let (date, start) = local_date_time(soon, zone);
        let (_, end) = local_date_time(soon + Duration::minutes(20), zone);
        let period = publish(
            &server,
            &clinic.registrar,
            &clinic.other_doctor_id,
            &date,
            &start,
            &end,
            json!({ "minAge": 18 }),
        )
        .await;
        assert_eq!(period["userErrors"], json!([]), "{period}");
        let slot = period["slots"][0]["id"].as_str().expect("slot").to_string();

        let no_profile = server.token(Role::Patient, None);
        assert_eq!(
            error_code(&book(&server, &no_profile, &slot).await),
            Some("NOT_ELIGIBLE")
        );
        let (_, token) = patient(&server).await;
        let booked = book(&server, &token, &slot).await;
        let id = booked["appointment"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let late = server
            .graphql(
                Some(&token),
                CANCEL,
                json!({ "input": { "appointmentId": id } }),
            )
            .await;
        assert_eq!(
            error_code(&late["data"]["cancelAppointment"]),
            Some("TOO_LATE_TO_CHANGE")
        );
        // The clinic may still cancel.
        let by_clinic = server
            .graphql(
                Some(&clinic.registrar),
                CANCEL,
                json!({ "input": { "appointmentId": id, "reason": "Врач заболел" } }),
            )
            .await;
        assert_eq!(
            by_clinic["data"]["cancelAppointment"]["appointment"]["cancelledBy"],
            "CLINIC"
        );

        // Beyond the horizon and in the past: refused when publishing or booking.
        let far = local_date_time(Utc::now() + Duration::days(30), zone).0;
        let far_period = publish(
            &server,
            &clinic.registrar,
            &clinic.doctor_id,
            &far,
            "09:00",
            "09:20",
            json!({}),
        )
        .await;
        let far_slot = far_period["slots"][0]["id"]
            .as_str()
            .expect("slot")
            .to_string();
        assert_eq!(
            error_code(&book(&server, &token, &far_slot).await),
            Some("OUTSIDE_BOOKING_HORIZON")
        );
        let yesterday = local_date_time(Utc::now() - Duration::days(1), zone).0;
        let past = publish(
            &server,
            &clinic.registrar,
            &clinic.doctor_id,
            &yesterday,
            "09:00",
            "09:20",
            json!({}),
        )
        .await;
        assert_eq!(error_code(&past), Some("IN_THE_PAST"));

        // Malformed input names the field.
        let bad = publish(
            &server,
            &clinic.registrar,
            &clinic.doctor_id,
            "2026-13-40",
            "09:00",
            "09:20",
            json!({}),
        )
        .await;
        assert_eq!(bad["userErrors"][0]["field"], json!(["input", "date"]));
        let bad = publish(
            &server,
            &clinic.registrar,
            &clinic.doctor_id,
            &far,
            "09:07",
            "09:20",
            json!({}),
        )
        .await;
        assert_eq!(bad["userErrors"][0]["field"], json!(["input", "start"]));
        assert_eq!(
            error_code(&book(&server, &token, "not-a-slot").await),
            Some("SLOT_NOT_FOUND")
        );
        let range = server
        .graphql(None, "query($d: ID!) { freeSlots(doctorId: $d, from: \"2026-01-01\", to: \"2025-01-01\") { id } }", json!({ "d": clinic.doctor_id }))
        .await;
        assert_eq!(range["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        let _ = &clinic.admin;
        server.stop().await;
    }
);

conformance!(
    two_server_processes_never_give_a_slot_twice,
    |test_db| async move {
        let binary = env!("CARGO_BIN_EXE_kabinet-server");
        let first = ServerProcess::start(binary, &test_db.url).await;
        let second = ServerProcess::start(binary, &test_db.url).await;
        let clinic = Clinic::open(&first, "Europe/Moscow").await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let client = if i % 2 == 0 {
                first.client.clone()
            } else {
                second.client.clone()
            };
            let slot = clinic.slots[6].clone();
            tasks.push(tokio::spawn(async move {
                let (_, token) = patient(&client).await;
                book(&client, &token, &slot).await
            }));
        }
        let results: Vec<Value> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let won = results
            .iter()
            .filter(|r| r["appointment"]["id"].is_string())
            .count();
        let taken = results
            .iter()
            .filter(|r| error_code(r) == Some("SLOT_TAKEN"))
            .count();
        assert_eq!((won, taken), (1, 49), "{results:?}");
        // Both processes serve the same read models.
        let winner = results
            .iter()
            .find(|r| r["appointment"]["id"].is_string())
            .expect("winner");
        let id = winner["appointment"]["id"].clone();
        let staff = second.token(Role::Registrar, Some(clinic.organisation_uuid));
        let tomorrow = local_date_time(Utc::now() + Duration::days(1), "Europe/Moscow").0;
        let day = second
        .data(Some(&staff), "query($o: ID!, $d: String!) { organisationAppointments(organisationId: $o, date: $d) { edges { node { id } } } }",
            json!({ "o": clinic.organisation_id, "d": tomorrow }))
        .await;
        assert_eq!(
            day["organisationAppointments"]["edges"][0]["node"]["id"],
            id
        );
        assert_eq!(journal_count(&test_db.db, "AppointmentBooked").await, 1);
        first.kill().await;
        second.kill().await;
    }
);

const SET_PREFERENCES: &str = "mutation($input: SetNotificationPreferencesInput!) {
    setNotificationPreferences(input: $input) {
        preferences { channels email phone } userErrors { field code message } } }";

const MY_NOTIFICATIONS: &str = "{ myNotifications(first: 10) { edges { node {
    kind title body objectType deliveries { channel status attempts } } } } }";

/// Polls the caller's notifications until `done` holds (the dispatcher runs in the background).
async fn notifications_until(client: &Client, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let found = client.data(Some(token), MY_NOTIFICATIONS, json!({})).await;
        let edges = found["myNotifications"]["edges"].clone();
        if done(&edges) {
            return edges;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("notifications did not reach the expected state");
}

conformance!(
    a_booking_confirmation_reaches_the_chosen_channels,
    |test_db| async move {
        let notifier = kabinet_domain::notify::MemoryNotifier::default();
        let server = Server::start_with_notifier(
            &test_db,
            Some(std::sync::Arc::new(notifier.clone())),
            |_| {},
        )
        .await;
        let zone = daytime_zone();
        let clinic = Clinic::open(&server, zone).await;
        let (patient_id, token) = patient(&server).await;

        // Bad preferences name every wrong field and change nothing.
        let refused = server
            .data(
                Some(&token),
                SET_PREFERENCES,
                json!({ "input": { "channels": ["EMAIL", "SMS"], "phone": "12345" } }),
            )
            .await["setNotificationPreferences"]
            .clone();
        let fields: Vec<&str> = refused["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"][1].as_str())
            .collect();
        assert_eq!(fields, ["email", "phone"], "{refused}");
        assert_eq!(
            server
                .data(
                    Some(&token),
                    "{ myNotificationPreferences { channels } }",
                    json!({})
                )
                .await["myNotificationPreferences"],
            Value::Null
        );

        let chosen = server
            .data(
                Some(&token),
                SET_PREFERENCES,
                json!({ "input": { "channels": ["SMS", "EMAIL"], "email": "oleg@example.ru", "phone": "8 916 123-45-67" } }),
            )
            .await["setNotificationPreferences"]
            .clone();
        assert_eq!(chosen["userErrors"], json!([]), "{chosen}");
        assert_eq!(
            chosen["preferences"],
            json!({ "channels": ["EMAIL", "SMS"], "email": "oleg@example.ru", "phone": "+79161234567" })
        );

        let booked = book(&server, &token, &clinic.slots[0]).await;
        assert_eq!(booked["userErrors"], json!([]), "{booked}");
        let (date, time) = (
            booked["appointment"]["date"]
                .as_str()
                .expect("date")
                .to_string(),
            booked["appointment"]["time"]
                .as_str()
                .expect("time")
                .to_string(),
        );
        let edges = notifications_until(&server, &token, |edges| {
            edges[0]["node"]["deliveries"]
                .as_array()
                .is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["status"] == "SENT"))
        })
        .await;
        let node = &edges[0]["node"];
        assert_eq!(node["kind"], "APPOINTMENT_BOOKED");
        assert_eq!(node["objectType"], "APPOINTMENT");
        let local_date = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .expect("date")
            .format("%d.%m.%Y")
            .to_string();
        // The doctor and the clinic with its address are named.
        let expected = format!(
            "Вы записаны на приём {local_date} в {time}, кабинет 214. \
             Врач: Иванова Анна Сергеевна. Городская поликлиника №2, ул. Тверская, 5."
        );
        assert_eq!(node["body"], json!(expected));

        // Exactly one message per channel, to the chosen addresses, with date, time and room.
        let sent = notifier.sent();
        let mut to: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
        to.sort();
        assert_eq!(to, ["+79161234567", "oleg@example.ru"]);
        assert!(sent.iter().all(|m| m.body.contains(&expected)));

        // Another patient sees none of it.
        let (_, other) = patient(&server).await;
        let theirs = server.data(Some(&other), MY_NOTIFICATIONS, json!({})).await;
        assert_eq!(theirs["myNotifications"]["edges"], json!([]));
        let _ = patient_id;
        server.stop().await;
    }
);

/// Fails the first attempt at every message, then delivers.
#[derive(Default, Clone)]
struct FlakyNotifier {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    delivered: kabinet_domain::notify::MemoryNotifier,
}

#[async_trait::async_trait]
impl kabinet_domain::notify::Notifier for FlakyNotifier {
    async fn send(
        &self,
        message: &kabinet_domain::notify::Message,
    ) -> Result<(), kabinet_domain::notify::NotifyError> {
        let first = {
            let mut seen = self.seen.lock().expect("lock");
            let first = !seen.contains(&message.body);
            seen.push(message.body.clone());
            first
        };
        if first {
            return Err(kabinet_domain::notify::NotifyError {
                channel: "email",
                reason: "the mail server is unavailable".into(),
            });
        }
        self.delivered.send(message).await
    }
}

async fn choose_email(client: &Client, token: &str, email: &str) {
    let chosen = client
        .data(
            Some(token),
            SET_PREFERENCES,
            json!({ "input": { "channels": ["EMAIL"], "email": email } }),
        )
        .await;
    assert_eq!(
        chosen["setNotificationPreferences"]["userErrors"],
        json!([]),
        "{chosen}"
    );
}

conformance!(
    two_dispatchers_deliver_each_message_once,
    |test_db| async move {
        let here = kabinet_domain::notify::MemoryNotifier::default();
        let server =
            Server::start_with_notifier(&test_db, Some(std::sync::Arc::new(here.clone())), |_| {})
                .await;
        // A second server's dispatcher on the same database, racing the first.
        let there = kabinet_domain::notify::MemoryNotifier::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let db = kabinet_domain::Db::connect(&test_db.url, &Default::default())
            .await
            .expect("db");
        let other = kabinet_graphql::dispatcher::Dispatcher::new(
            db.clone(),
            kabinet_domain::command::CommandRunner::new(kabinet_domain::Journal::new(db)),
            std::sync::Arc::new(there.clone()),
            std::sync::Arc::new(kabinet_domain::clock::SystemClock),
        );
        let racing = tokio::spawn(other.run(std::time::Duration::from_millis(5), stop.clone()));

        let clinic = Clinic::open(&server, daytime_zone()).await;
        let mut patients = Vec::new();
        for (i, slot) in clinic.slots.iter().take(6).enumerate() {
            let (_, token) = patient(&server).await;
            choose_email(&server, &token, &format!("patient{i}@example.ru")).await;
            let booked = book(&server, &token, slot).await;
            assert_eq!(booked["userErrors"], json!([]), "{booked}");
            patients.push(token);
        }
        for token in &patients {
            notifications_until(&server, token, |edges| {
                edges[0]["node"]["deliveries"]
                    == json!([{ "channel": "EMAIL", "status": "SENT", "attempts": 1 }])
            })
            .await;
        }
        stop.cancel();
        racing.await.expect("dispatcher stops");
        let mut to: Vec<String> = here
            .sent()
            .into_iter()
            .chain(there.sent())
            .map(|m| m.to)
            .collect();
        to.sort();
        let expected: Vec<String> = (0..6).map(|i| format!("patient{i}@example.ru")).collect();
        assert_eq!(to, expected, "every message exactly once");
        server.stop().await;
    }
);

conformance!(a_failed_delivery_is_retried, |test_db| async move {
    let notifier = FlakyNotifier::default();
    let server = Server::start_with_notifier(
        &test_db,
        Some(std::sync::Arc::new(notifier.clone())),
        |_| {},
    )
    .await;
    let clinic = Clinic::open(&server, daytime_zone()).await;
    let (_, token) = patient(&server).await;
    choose_email(&server, &token, "oleg@example.ru").await;
    let booked = book(&server, &token, &clinic.slots[0]).await;
    assert_eq!(booked["userErrors"], json!([]), "{booked}");
    notifications_until(&server, &token, |edges| {
        edges[0]["node"]["deliveries"][0]["status"] == "FAILED"
    })
    .await;
    let edges = notifications_until(&server, &token, |edges| {
        edges[0]["node"]["deliveries"][0]["status"] == "SENT"
    })
    .await;
    assert_eq!(edges[0]["node"]["deliveries"][0]["attempts"], 2);
    assert_eq!(notifier.delivered.sent().len(), 1);
    server.stop().await;
});

conformance!(
    a_stalled_mail_relay_holds_up_neither_sms_nor_later_messages,
    |test_db| async move {
        use kabinet_adapters::sms::SmsGatewayNotifier;
        use kabinet_adapters::smtp::SmtpNotifier;
        use kabinet_tests::delivery::{SmsReceiver, SMS_TOKEN};
        use kabinet_tests::outbound::SilentRelay;

        let relay = SilentRelay::start().await;
        let gateway = SmsReceiver::start().await;
        // Long enough that setting up the SMS patients below, on a slow machine,
        // ends before the held e-mails give up.
        let deadline = std::time::Duration::from_secs(15);
        let notifier = kabinet_domain::notify::ByChannel {
            email: std::sync::Arc::new(
                SmtpNotifier::new(&relay.url, "no-reply@kabinet.test")
                    .expect("smtp")
                    .with_deadline(deadline),
            ),
            sms: std::sync::Arc::new(
                SmsGatewayNotifier::new(&gateway.url, Some(SMS_TOKEN.to_string())).expect("sms"),
            ),
        };
        let server =
            Server::start_with_notifier(&test_db, Some(std::sync::Arc::new(notifier)), |_| {})
                .await;
        let clinic = Clinic::open(&server, daytime_zone()).await;
        // More e-mails than go out at once: the e-mail lane is full and stuck.
        let mut by_email = Vec::new();
        for (i, slot) in clinic.slots.iter().take(6).enumerate() {
            let (_, token) = patient(&server).await;
            choose_email(&server, &token, &format!("stuck{i}@example.ru")).await;
            let booked = book(&server, &token, slot).await;
            assert_eq!(booked["userErrors"], json!([]), "{booked}");
            by_email.push(token);
        }
        relay
            .until_holding(kabinet_graphql::dispatcher::LANE_WIDTH)
            .await;
        // Patients who chose SMS, booked after them, hear at once.
        let mut phones = Vec::new();
        for slot in clinic.other_slots.iter().take(5) {
            let (_, token) = patient(&server).await;
            let phone = format!("+7916{:07}", Uuid::new_v4().as_u128() % 10_000_000);
            let chosen = server
                .data(
                    Some(&token),
                    SET_PREFERENCES,
                    json!({ "input": { "channels": ["SMS"], "phone": phone } }),
                )
                .await;
            assert_eq!(
                chosen["setNotificationPreferences"]["userErrors"],
                json!([]),
                "{chosen}"
            );
            let booked = book(&server, &token, slot).await;
            assert_eq!(booked["userErrors"], json!([]), "{booked}");
            phones.push(phone);
        }
        for phone in &phones {
            let text = gateway.nth_message_to(phone, 1).await;
            assert!(!text.is_empty());
        }
        assert!(
            relay.holding() > 0,
            "the SMS came through while e-mails were still held by the relay"
        );
        // The stuck e-mail fails by its deadline and is tried again later.
        let first = &by_email[0];
        let mut seen = Vec::new();
        for _ in 0..600 {
            let found = server.data(Some(first), MY_NOTIFICATIONS, json!({})).await;
            let delivery = found["myNotifications"]["edges"][0]["node"]["deliveries"][0].clone();
            if seen.last() != Some(&delivery) {
                seen.push(delivery.clone());
            }
            if delivery["attempts"].as_i64() >= Some(2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let failed_once = json!({ "channel": "EMAIL", "status": "FAILED", "attempts": 1 });
        assert!(seen.contains(&failed_once), "{seen:?}");
        assert!(
            seen.last()
                .is_some_and(|d| d["attempts"].as_i64() >= Some(2)),
            "retried: {seen:?}"
        );
        server.stop().await;
    }
);

conformance!(
    without_preferences_the_confirmation_goes_to_the_login,
    |test_db| async move {
        let notifier = kabinet_domain::notify::MemoryNotifier::default();
        let server = Server::start_with_notifier(
            &test_db,
            Some(std::sync::Arc::new(notifier.clone())),
            |_| {},
        )
        .await;
        let clinic = Clinic::open(&server, daytime_zone()).await;
        let phone = format!("+7916{:07}", Uuid::new_v4().as_u128() % 10_000_000);
        server
            .data(
                None,
                "mutation($c: String!) { startRegistration(input: { contact: $c }) { userErrors { code } } }",
                json!({ "c": phone }),
            )
            .await;
        let code = notifier
            .sent()
            .iter()
            .rev()
            .find(|m| m.to == phone)
            .and_then(|m| kabinet_tests::delivery::six_digits(&m.body))
            .expect("a registration code");
        let confirmed = server
            .data(
                None,
                "mutation($c: String!, $code: String!) { confirmRegistration(input: {
                    contact: $c, code: $code, password: \"Очень-длинный-пароль-7\", acceptTerms: true }) {
                    tokens { accessToken } userErrors { field code message } } }",
                json!({ "c": phone, "code": code }),
            )
            .await;
        let token = confirmed["confirmRegistration"]["tokens"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("registered: {confirmed}"))
            .to_string();
        let recorded = server
            .data(
                Some(&token),
                "mutation { recordPatientProfile(input: { surname: \"Смирнов\", firstName: \"Олег\", birthDate: \"1990-04-12\", sex: MALE }) { recorded userErrors { code } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            recorded["recordPatientProfile"]["recorded"], true,
            "{recorded}"
        );
        let booked = book(&server, &token, &clinic.slots[0]).await;
        assert_eq!(booked["userErrors"], json!([]), "{booked}");
        notifications_until(&server, &token, |edges| {
            edges[0]["node"]["deliveries"]
                == json!([{ "channel": "SMS", "status": "SENT", "attempts": 1 }])
        })
        .await;
        assert!(
            notifier
                .sent()
                .iter()
                .any(|m| m.to == phone && m.body.contains("Вы записаны на приём")),
            "the confirmation went to the login phone"
        );
        server.stop().await;
    }
);
