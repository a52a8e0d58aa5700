//! `canteen rollout status` and `canteen rollout history`: an app's versions and rollout, as
//! one agent's status tells them.

use std::collections::BTreeMap;

use crate::api::{AppStatusJson, SlotStatusJson, StatusJson};
use crate::plan::table;

fn app<'a>(status: &'a StatusJson, name: &str) -> Result<&'a AppStatusJson, String> {
    status.apps.iter().find(|a| a.name == name).ok_or_else(|| {
        let names: Vec<&str> = status.apps.iter().map(|a| a.name.as_str()).collect();
        format!("no app named {name:?}; apps: {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") })
    })
}

fn image_of(app: &AppStatusJson, version: u64) -> &str {
    app.versions.iter().find(|v| v.version == version).map_or("?", |v| v.image.as_str())
}

/// Where `name`'s rollout stands: its phase, its slots per version (healthy, ready), and what
/// it waits on.
pub fn status(status: &StatusJson, name: &str) -> Result<String, String> {
    let app = app(status, name)?;
    let mut out =
        format!("app {name}: version {} ({}), rollout {}", app.version, image_of(app, app.version), app.rollout);
    if app.running_version != app.version {
        out.push_str(&format!(", running version {} ({})", app.running_version, image_of(app, app.running_version)));
    }
    out.push('\n');
    let slots: Vec<&SlotStatusJson> = status.slots.iter().filter(|s| s.app == name && s.version > 0).collect();
    let mut per_version: BTreeMap<u64, (usize, usize, usize)> = BTreeMap::new();
    for s in &slots {
        let e = per_version.entry(s.version).or_default();
        e.0 += 1;
        e.1 += usize::from(s.health == "healthy");
        e.2 += usize::from(s.ready);
    }
    let mut rows = vec![[
        "VERSION".to_owned(),
        "IMAGE".to_owned(),
        "REPLICAS".to_owned(),
        "HEALTHY".to_owned(),
        "READY".to_owned(),
    ]];
    for (version, (n, healthy, ready)) in &per_version {
        rows.push([
            format!("v{version}"),
            image_of(app, *version).to_owned(),
            n.to_string(),
            healthy.to_string(),
            ready.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    let waits = waits(app, &slots);
    if !waits.is_empty() {
        out.push_str("\nwaiting:\n");
        for w in waits {
            out.push_str(&format!("  {w}\n"));
        }
    }
    if let Some(failed) = app.versions.iter().find(|v| v.version == app.version && v.outcome.starts_with("failed")) {
        out.push_str(&format!("\nversion {} {}\n", failed.version, failed.outcome));
    }
    Ok(out)
}

/// What each slot being replaced waits on, in slot order.
fn waits(app: &AppStatusJson, slots: &[&SlotStatusJson]) -> Vec<String> {
    let Some(u) = &app.update else { return Vec::new() };
    let running = app.running_version;
    let mut by_slot: BTreeMap<u32, Vec<&SlotStatusJson>> = BTreeMap::new();
    for s in slots {
        by_slot.entry(s.slot).or_default().push(s);
    }
    let mut out = Vec::new();
    let mut old_only = 0;
    for (slot, list) in &by_slot {
        let new = list.iter().find(|s| s.version == running);
        let old = list.iter().find(|s| s.version != running);
        match (new, old) {
            (Some(n), Some(o)) if n.ready && app.rollout == "canary" => out.push(format!(
                "slot {slot}: canary v{running} on {} ready beside v{} on {}; waits for `canteen promote {}`",
                n.node, o.version, o.node, app.name
            )),
            (Some(n), Some(o)) if n.health == "healthy" => out.push(format!(
                "slot {slot}: v{running} on {} healthy, counts after {} ms healthy; then v{} on {} stops",
                n.node, u.min_healthy_ms, o.version, o.node
            )),
            (Some(n), Some(o)) => out.push(format!(
                "slot {slot}: v{running} on {} {} (must count within {} ms); v{} on {} serves meanwhile",
                n.node, n.health, u.healthy_deadline_ms, o.version, o.node
            )),
            (None, Some(_)) => old_only += 1,
            _ => {}
        }
    }
    if old_only > 0 && app.rollout != "steady" {
        let why = match app.rollout.as_str() {
            "canary" => format!("the version is not promoted ({} canaries)", u.canary),
            "paused" => {
                "the rollout failed and auto_revert is off: apply a new version or `canteen rollout undo`".to_owned()
            }
            _ => format!(
                "max_surge = {}, max_unavailable = {}: the slots above go first",
                u.max_surge, u.max_unavailable
            ),
        };
        out.push(format!("{old_only} slot(s) still on an older version: {why}"));
    }
    out
}

/// Every version kept of `name`: its image, why it was made, how its rollout ended.
pub fn history(status: &StatusJson, name: &str) -> Result<String, String> {
    let app = app(status, name)?;
    let mut rows = vec![["VERSION".to_owned(), "IMAGE".to_owned(), "CAUSE".to_owned(), "OUTCOME".to_owned()]];
    for v in &app.versions {
        let mut outcome = if v.outcome.is_empty() { "-".to_owned() } else { v.outcome.clone() };
        if v.version == app.version && app.running_version != app.version {
            outcome.push_str(&format!(" (reverted to version {})", app.running_version));
        } else if v.version == app.version && v.outcome.is_empty() {
            outcome = app.rollout.clone();
        }
        rows.push([format!("v{}", v.version), v.image.clone(), v.cause.clone(), outcome]);
    }
    Ok(table(&rows))
}
