//! Demonstration data for `kabinet serve --demo`, written through the same commands
//! the API uses.

use kabinet_domain::command::{CommandService, Retry};
use kabinet_domain::directory::{Organisation, OrganisationCommand, OrganisationDetails};
use kabinet_domain::{Actor, EventMetadata, Role};
use uuid::Uuid;

/// (name, region, address, time zone, departments, specialisations)
const ORGANISATIONS: &[(&str, &str, &str, &str, &[&str], &[&str])] = &[
    (
        "Городская поликлиника №3",
        "Москва",
        "ул. Ленина, 12",
        "Europe/Moscow",
        &["Терапия", "Кардиология"],
        &["therapist", "cardiologist"],
    ),
    (
        "Детская поликлиника №1",
        "Санкт-Петербург",
        "Невский пр., 100",
        "Europe/Moscow",
        &["Педиатрия"],
        &["paediatrician"],
    ),
    (
        "Стоматологическая поликлиника №5",
        "Свердловская область",
        "г. Екатеринбург, ул. Малышева, 7",
        "Asia/Yekaterinburg",
        &["Стоматология"],
        &["dentist"],
    ),
    (
        "Областная клиническая больница",
        "Новосибирская область",
        "г. Новосибирск, ул. Немировича-Данченко, 130",
        "Asia/Novosibirsk",
        &["Терапия", "Неврология", "Эндокринология"],
        &["therapist", "neurologist", "endocrinologist"],
    ),
];

/// Seeds the demonstration directory if the journal is empty; returns whether it did.
pub async fn seed_if_empty(commands: &CommandService) -> anyhow::Result<bool> {
    if commands.journal().count().await? > 0 {
        return Ok(false);
    }
    let admin = Actor {
        account_id: Uuid::now_v7(),
        role: Role::Admin,
        organisation_id: None,
    };
    for (name, region, address, zone, departments, specialisations) in ORGANISATIONS {
        let details = OrganisationDetails {
            name: name.to_string(),
            region: region.to_string(),
            address: address.to_string(),
            time_zone: zone.to_string(),
            working_hours: "Пн–Пт 08:00–20:00, Сб 09:00–15:00".to_string(),
            departments: departments.iter().map(|s| s.to_string()).collect(),
            specialisations: specialisations.iter().map(|s| s.to_string()).collect(),
        };
        let meta = EventMetadata::new(admin.clone(), "demo-seed");
        commands
            .execute::<Organisation>(
                &Uuid::now_v7().to_string(),
                OrganisationCommand::Register(details),
                &(),
                &meta,
                &serde_json::Value::Null,
                Retry::Never,
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo seed failed: {e}"))?;
    }
    Ok(true)
}
