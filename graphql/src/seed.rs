//! Demonstration and load data, written through the same commands the API uses:
//! organisations in several regions, doctors over the usual specialties, their
//! schedules, patients with profiles, past visits with outcomes and upcoming
//! appointments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{Duration, NaiveTime, TimeZone, Utc};
use futures::stream::{self, StreamExt};
use kabinet_domain::appointments::{
    AppointmentCommand, BookingError, BookingRequest, Bookings, ChangedBy,
};
use kabinet_domain::clock::{Clock, FixedClock, SystemClock};
use kabinet_domain::command::{CommandRunner, Retry};
use kabinet_domain::directory::{
    Doctor, DoctorCommand, DoctorDetails, MedicalService, Organisation, OrganisationCommand,
    OrganisationDetails, PeriodDraft, Schedule, ScheduleCommand, ServiceCommand, ServiceDetails,
    ServiceForm, ServiceKind,
};
use kabinet_domain::journal::reservations::Reserving;
use kabinet_domain::patients::{Patient, PatientCommand, PatientProfile, Sex};
use kabinet_domain::{Actor, EventMetadata, Role};
use serde_json::Value;
use uuid::Uuid;

/// How much to create.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedSize {
    /// Organisations (spread over regions and time zones).
    #[arg(long, default_value_t = 6)]
    pub organisations: usize,
    /// Doctors, spread over the organisations and the usual specialties.
    #[arg(long, default_value_t = 50)]
    pub doctors: usize,
    /// Days of published schedules from tomorrow on.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Patients with profiles.
    #[arg(long, default_value_t = 200)]
    pub patients: usize,
    /// Past visits with outcomes per patient.
    #[arg(long, default_value_t = 2)]
    pub past_visits: usize,
    /// Days of past schedules the past visits take place in.
    #[arg(long, default_value_t = 14)]
    pub past_days: u32,
    /// Commands in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed of the pseudo-random choices (the same seed gives the same data shape).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for SeedSize {
    fn default() -> Self {
        SeedSize {
            organisations: 6,
            doctors: 50,
            days: 14,
            patients: 200,
            past_visits: 2,
            past_days: 14,
            concurrency: 8,
            seed: 1,
        }
    }
}

/// What the seed created, for printing tokens and examples.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub organisations: Vec<Uuid>,
    pub doctors: Vec<Uuid>,
    /// The organisation of each doctor, in the order of `doctors`.
    pub doctor_organisations: Vec<Uuid>,
    pub patients: Vec<Uuid>,
    /// Pharmacies that receive e-prescriptions.
    pub pharmacies: Vec<Uuid>,
    pub appointments: u64,
    pub events: i64,
}

const REGIONS: &[(&str, &str, &str)] = &[
    ("Москва", "Europe/Moscow", "ул. Тверская, 12"),
    ("Санкт-Петербург", "Europe/Moscow", "Невский пр., 100"),
    (
        "Свердловская область",
        "Asia/Yekaterinburg",
        "г. Екатеринбург, ул. Малышева, 7",
    ),
    (
        "Новосибирская область",
        "Asia/Novosibirsk",
        "г. Новосибирск, Красный пр., 30",
    ),
    (
        "Республика Татарстан",
        "Europe/Moscow",
        "г. Казань, ул. Баумана, 19",
    ),
    (
        "Приморский край",
        "Asia/Vladivostok",
        "г. Владивосток, Светланская ул., 40",
    ),
    (
        "Краснодарский край",
        "Europe/Moscow",
        "г. Краснодар, ул. Красная, 55",
    ),
    (
        "Калининградская область",
        "Europe/Kaliningrad",
        "г. Калининград, Ленинский пр., 8",
    ),
];

/// (specialty, department, service code, service name)
const SPECIALTIES: &[(&str, &str, &str, &str)] = &[
    (
        "therapist",
        "Терапия",
        "B01.047.001",
        "Приём врача-терапевта первичный",
    ),
    (
        "cardiologist",
        "Кардиология",
        "B01.015.001",
        "Приём врача-кардиолога первичный",
    ),
    (
        "dentist",
        "Стоматология",
        "B01.064.001",
        "Приём врача-стоматолога первичный",
    ),
    (
        "paediatrician",
        "Педиатрия",
        "B01.031.001",
        "Приём врача-педиатра первичный",
    ),
    (
        "neurologist",
        "Неврология",
        "B01.023.001",
        "Приём врача-невролога первичный",
    ),
    (
        "endocrinologist",
        "Эндокринология",
        "B01.058.001",
        "Приём врача-эндокринолога первичный",
    ),
    (
        "otolaryngologist",
        "Оториноларингология",
        "B01.028.001",
        "Приём врача-оториноларинголога первичный",
    ),
    (
        "ophthalmologist",
        "Офтальмология",
        "B01.029.001",
        "Приём врача-офтальмолога первичный",
    ),
    (
        "surgeon",
        "Хирургия",
        "B01.057.001",
        "Приём врача-хирурга первичный",
    ),
    (
        "gynaecologist",
        "Гинекология",
        "B01.001.001",
        "Приём врача-акушера-гинеколога первичный",
    ),
];

const SURNAMES: &[(&str, &str)] = &[
    ("Иванов", "Иванова"),
    ("Смирнов", "Смирнова"),
    ("Кузнецов", "Кузнецова"),
    ("Попов", "Попова"),
    ("Васильев", "Васильева"),
    ("Петров", "Петрова"),
    ("Соколов", "Соколова"),
    ("Михайлов", "Михайлова"),
    ("Новиков", "Новикова"),
    ("Фёдоров", "Фёдорова"),
    ("Морозов", "Морозова"),
    ("Волков", "Волкова"),
    ("Алексеев", "Алексеева"),
    ("Лебедев", "Лебедева"),
    ("Семёнов", "Семёнова"),
    ("Егоров", "Егорова"),
    ("Павлов", "Павлова"),
    ("Козлов", "Козлова"),
    ("Степанов", "Степанова"),
    ("Николаев", "Николаева"),
];
const MALE_NAMES: &[&str] = &[
    "Александр",
    "Дмитрий",
    "Максим",
    "Сергей",
    "Андрей",
    "Алексей",
    "Иван",
    "Михаил",
];
const FEMALE_NAMES: &[&str] = &[
    "Анна",
    "Мария",
    "Елена",
    "Ольга",
    "Наталья",
    "Татьяна",
    "Ирина",
    "Екатерина",
];
const PATRONYMICS: &[(&str, &str)] = &[
    ("Александрович", "Александровна"),
    ("Сергеевич", "Сергеевна"),
    ("Владимирович", "Владимировна"),
    ("Николаевич", "Николаевна"),
    ("Петрович", "Петровна"),
    ("Андреевич", "Андреевна"),
];
/// (ICD-10, diagnosis, recommendation)
const DIAGNOSES: &[(&str, &str, &str)] = &[
    (
        "J06.9",
        "Острая инфекция верхних дыхательных путей",
        "Обильное питьё, контроль температуры",
    ),
    (
        "I10",
        "Эссенциальная гипертензия",
        "Контроль давления дважды в день, ограничение соли",
    ),
    (
        "K02.1",
        "Кариес дентина",
        "Повторный осмотр через 6 месяцев",
    ),
    (
        "M54.5",
        "Боль внизу спины",
        "Лечебная физкультура, избегать переохлаждения",
    ),
    (
        "E11.9",
        "Сахарный диабет 2 типа без осложнений",
        "Диета, контроль гликемии",
    ),
    (
        "H52.1",
        "Миопия",
        "Подбор очков, повторный осмотр через год",
    ),
];

/// A small deterministic generator (xorshift64*), enough for data shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs one command, failing the seed on anything but success.
async fn run<A>(
    commands: &CommandRunner,
    meta: &EventMetadata,
    id: &str,
    command: A::Command,
) -> anyhow::Result<A>
where
    A: Reserving<Services = ()> + Clone,
    A::Command: Clone,
{
    commands
        .execute::<A>(id, command, &(), meta, &Value::Null, Retry::OnConflict)
        .await
        .map(|(_, state)| state)
        .map_err(|e| anyhow::anyhow!("seed command on {} {id} failed: {e}", A::TYPE))
}

/// Writes the dataset through `commands`.
pub async fn seed(commands: &CommandRunner, size: &SeedSize) -> anyhow::Result<SeedReport> {
    let mut rng = Rng(size.seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let admin = Actor {
        account_id: Uuid::now_v7(),
        role: Role::Admin,
        organisation_id: None,
    };
    let admin_meta = EventMetadata::new(admin.clone(), "seed");
    let mut report = SeedReport::default();

    for (specialty, _, code, name) in SPECIALTIES {
        let details = ServiceDetails {
            code: code.to_string(),
            name: name.to_string(),
            kind: ServiceKind::Consultation,
            form: ServiceForm::InPerson,
            cost: if *specialty == "dentist" {
                "1500".into()
            } else {
                "0".into()
            },
            required_documents: vec!["Полис ОМС".into(), "Паспорт".into()],
        };
        // Services are shared: a second seed into the same store finds them registered.
        let _ = commands
            .execute::<MedicalService>(
                code,
                ServiceCommand::Register(details),
                &(),
                &admin_meta,
                &Value::Null,
                Retry::Never,
            )
            .await;
    }

    let mut zones = Vec::new();
    for i in 0..size.organisations.max(1) {
        let (region, zone, address) = REGIONS[i % REGIONS.len()];
        let id = Uuid::now_v7();
        let details = OrganisationDetails {
            name: format!("Городская поликлиника №{}", i + 1),
            region: region.to_string(),
            address: address.to_string(),
            time_zone: zone.to_string(),
            working_hours: "Пн–Пт 08:00–20:00, Сб 09:00–15:00".to_string(),
            departments: SPECIALTIES.iter().map(|s| s.1.to_string()).collect(),
            specialisations: SPECIALTIES.iter().map(|s| s.0.to_string()).collect(),
        };
        run::<Organisation>(
            commands,
            &admin_meta,
            &id.to_string(),
            OrganisationCommand::Register(details),
        )
        .await?;
        report.organisations.push(id);
        zones.push(zone);
    }

    // A pharmacy, so the pharmacy part of e-prescriptions can be tried.
    let pharmacy = Uuid::now_v7();
    let (region, zone, _) = REGIONS[0];
    run::<Organisation>(
        commands,
        &admin_meta,
        &pharmacy.to_string(),
        OrganisationCommand::Register(OrganisationDetails {
            name: "Аптека «Здоровье»".to_string(),
            region: region.to_string(),
            address: "ул. Тверская, 20".to_string(),
            time_zone: zone.to_string(),
            working_hours: "Ежедневно 08:00–22:00".to_string(),
            departments: vec!["Рецептурный отдел".to_string()],
            specialisations: vec![],
        }),
    )
    .await?;
    run::<Organisation>(
        commands,
        &admin_meta,
        &pharmacy.to_string(),
        OrganisationCommand::DesignatePharmacy,
    )
    .await?;
    report.pharmacies.push(pharmacy);

    let mut doctors = Vec::new();
    for i in 0..size.doctors {
        let org = i % report.organisations.len();
        let (specialty, department, code, _) = SPECIALTIES[i % SPECIALTIES.len()];
        let female = rng.below(2) == 0;
        let (m, f) = SURNAMES[rng.below(SURNAMES.len())];
        let (pm, pf) = PATRONYMICS[rng.below(PATRONYMICS.len())];
        let details = DoctorDetails {
            surname: if female { f } else { m }.to_string(),
            first_name: if female {
                FEMALE_NAMES[rng.below(8)]
            } else {
                MALE_NAMES[rng.below(8)]
            }
            .to_string(),
            patronymic: Some(if female { pf } else { pm }.to_string()),
            specialty: specialty.to_string(),
            qualification: [
                "высшая категория",
                "первая категория",
                "кандидат медицинских наук",
            ][rng.below(3)]
            .to_string(),
            organisation_id: report.organisations[org],
            department: department.to_string(),
            service_codes: vec![code.to_string()],
        };
        let id = Uuid::now_v7();
        run::<Doctor>(
            commands,
            &admin_meta,
            &id.to_string(),
            DoctorCommand::Register(details),
        )
        .await?;
        report.doctors.push(id);
        report.doctor_organisations.push(report.organisations[org]);
        doctors.push((id, report.organisations[org], zones[org], code));
    }

    // Schedules: past days (published "back then" with a clock in the past) and
    // the coming days. Each day 08:00–20:00 in 20-minute slots.
    let now = Utc::now();
    let past_clock = FixedClock::new(now - Duration::days(size.past_days as i64 + 2));
    let publish = |doctor: (Uuid, Uuid, &'static str, &'static str),
                   offset: i64,
                   published_at: chrono::DateTime<Utc>,
                   horizon: u32| {
        let (doctor_id, organisation_id, zone, code) = doctor;
        let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::Europe::Moscow);
        let date = (now.with_timezone(&tz) + Duration::days(offset)).date_naive();
        ScheduleCommand::Publish {
            doctor_id,
            organisation_id,
            time_zone: zone.to_string(),
            draft: PeriodDraft {
                period_id: Uuid::now_v7(),
                date,
                start: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or(NaiveTime::MIN),
                end: NaiveTime::from_hms_opt(20, 0, 0).unwrap_or(NaiveTime::MIN),
                slot_minutes: 20,
                room: format!("{}", 100 + (doctor_id.as_u128() % 300) as u32),
                service_codes: vec![code.to_string()],
                booking_horizon_days: horizon,
                change_cutoff_hours: 2,
                min_age: None,
                max_age: None,
            },
            now: published_at,
        }
    };
    let mut schedule_commands = Vec::new();
    for doctor in &doctors {
        for day in -(size.past_days as i64)..=-1 {
            schedule_commands.push((
                doctor.0,
                publish(*doctor, day, past_clock.now(), size.past_days + 3),
            ));
        }
        for day in 1..=size.days as i64 {
            schedule_commands.push((doctor.0, publish(*doctor, day, now, 14)));
        }
    }
    // One doctor's schedule is one stream: publish per doctor in order, doctors in parallel.
    let mut by_doctor: std::collections::BTreeMap<Uuid, Vec<ScheduleCommand>> = Default::default();
    for (doctor, command) in schedule_commands {
        by_doctor.entry(doctor).or_default().push(command);
    }
    let failures = AtomicU64::new(0);
    stream::iter(by_doctor)
        .for_each_concurrent(size.concurrency.max(1), |(doctor, list)| {
            let meta = admin_meta.clone();
            let failures = &failures;
            async move {
                for command in list {
                    if run::<Schedule>(commands, &meta, &doctor.to_string(), command)
                        .await
                        .is_err()
                    {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;

    // Patients: a profile, past visits with outcomes, one upcoming appointment.
    let past_booking = Bookings::new(commands.clone(), Arc::new(past_clock));
    let booking = Bookings::new(commands.clone(), Arc::new(SystemClock));
    let appointments = AtomicU64::new(0);
    let plans: Vec<(Uuid, u64)> = (0..size.patients)
        .map(|_| (Uuid::now_v7(), rng.next()))
        .collect();
    report.patients = plans.iter().map(|(p, _)| *p).collect();
    // The demo's patient sees the demo's doctor (the first one): that visit puts
    // them in the care of the doctor's organisation, so the doctor may prescribe.
    let first_patient = report.patients.first().copied();
    let doctors = &doctors;
    stream::iter(plans)
        .for_each_concurrent(size.concurrency.max(1), |(patient, seed)| {
            let (past_booking, booking, appointments) = (&past_booking, &booking, &appointments);
            async move {
                let mut rng = Rng(seed | 1);
                let actor = Actor {
                    account_id: patient,
                    role: Role::Patient,
                    organisation_id: None,
                };
                let meta = EventMetadata::new(actor, "seed");
                let female = rng.below(2) == 0;
                let (m, f) = SURNAMES[rng.below(SURNAMES.len())];
                let birth = Utc
                    .with_ymd_and_hms(
                        1945 + rng.below(75) as i32,
                        1 + rng.below(12) as u32,
                        1 + rng.below(28) as u32,
                        0,
                        0,
                        0,
                    )
                    .single()
                    .map(|t| t.date_naive())
                    .unwrap_or_default();
                let profile = PatientProfile {
                    surname: if female { f } else { m }.to_string(),
                    first_name: if female {
                        FEMALE_NAMES[rng.below(8)]
                    } else {
                        MALE_NAMES[rng.below(8)]
                    }
                    .to_string(),
                    patronymic: Some(
                        {
                            let (pm, pf) = PATRONYMICS[rng.below(PATRONYMICS.len())];
                            if female {
                                pf
                            } else {
                                pm
                            }
                        }
                        .to_string(),
                    ),
                    birth_date: birth,
                    sex: if female { Sex::Female } else { Sex::Male },
                };
                let command = PatientCommand::RecordProfile {
                    profile,
                    today: now.date_naive(),
                };
                if run::<Patient>(commands, &meta, &patient.to_string(), command)
                    .await
                    .is_err()
                {
                    return;
                }
                // Past visits: booked back then, then fulfilled by the doctor.
                let mut visits = 0;
                for _ in 0..size.past_visits * 4 {
                    if visits == size.past_visits || size.past_days == 0 || doctors.is_empty() {
                        break;
                    }
                    let (doctor_id, organisation_id, _, _) = doctors[rng.below(doctors.len())];
                    let day = 1 + rng.below(size.past_days as usize) as i64;
                    let slot = now - Duration::days(day);
                    let start = slot_start(rng.next(), slot, doctors, doctor_id);
                    let Some(start) = start else { continue };
                    let Ok((outcome, _)) = past_booking
                        .book(&meta, request(patient, doctor_id, start), &Value::Null)
                        .await
                    else {
                        continue;
                    };
                    let Ok(id) = Uuid::parse_str(&outcome.aggregate_id) else {
                        continue;
                    };
                    let (code, text, advice) = DIAGNOSES[rng.below(DIAGNOSES.len())];
                    let doctor = Actor {
                        account_id: doctor_id,
                        role: Role::Doctor,
                        organisation_id: Some(organisation_id),
                    };
                    let fulfil = AppointmentCommand::Fulfil {
                        diagnosis_code: code.into(),
                        diagnosis_text: text.into(),
                        recommendations: advice.into(),
                        prescriptions: vec![],
                        referrals: vec![],
                        now,
                        opens_before: Duration::minutes(60),
                    };
                    if past_booking
                        .act(
                            &EventMetadata::new(doctor, "seed"),
                            id,
                            fulfil,
                            &Value::Null,
                        )
                        .await
                        .is_ok()
                    {
                        visits += 1;
                        appointments.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // One upcoming appointment.
                for _ in 0..8 {
                    if doctors.is_empty() || size.days == 0 {
                        break;
                    }
                    let picked = doctors[rng.below(doctors.len())];
                    let (doctor_id, _, _, _) = if Some(patient) == first_patient {
                        doctors[0]
                    } else {
                        picked
                    };
                    let day = 1 + rng.below(size.days as usize) as i64;
                    let Some(start) =
                        slot_start(rng.next(), now + Duration::days(day), doctors, doctor_id)
                    else {
                        continue;
                    };
                    match booking
                        .book(&meta, request(patient, doctor_id, start), &Value::Null)
                        .await
                    {
                        Ok(_) => {
                            appointments.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(BookingError::User(_)) => continue,
                        Err(BookingError::Internal(e)) => {
                            tracing::warn!(error = %e, "seed booking failed");
                            break;
                        }
                    }
                }
            }
        })
        .await;
    report.appointments = appointments.load(Ordering::Relaxed);
    report.events = commands.journal().count().await?;
    if failures.load(Ordering::Relaxed) > 0 {
        tracing::warn!(
            failures = failures.load(Ordering::Relaxed),
            "some schedule periods were not published"
        );
    }
    Ok(report)
}

/// A patient's own booking of `doctor_id` at `start`.
fn request(patient_id: Uuid, doctor_id: Uuid, start: chrono::DateTime<Utc>) -> BookingRequest {
    BookingRequest {
        patient_id,
        doctor_id,
        start,
        service_code: None,
        by: ChangedBy::Patient,
    }
}

/// A slot start between 08:00 and 20:00 local time on the day of `around`, for `doctor_id`.
fn slot_start(
    random: u64,
    around: chrono::DateTime<Utc>,
    doctors: &[(Uuid, Uuid, &'static str, &'static str)],
    doctor_id: Uuid,
) -> Option<chrono::DateTime<Utc>> {
    let zone = doctors.iter().find(|d| d.0 == doctor_id)?.2;
    let tz: chrono_tz::Tz = zone.parse().ok()?;
    let date = around.with_timezone(&tz).date_naive();
    let minutes = 8 * 60 + 20 * (random % 36) as u32;
    let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0)?;
    tz.from_local_datetime(&date.and_time(time))
        .single()
        .map(|t| t.with_timezone(&Utc))
}
