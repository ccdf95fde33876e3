//! The dashboard: leads per day by channel, the funnel by state, and the share of leads
//! touched within the SLA, calls (answered, missed, wait) and chats (time to the first
//! reply) from the inbound webhooks, for the last 7, 30 or 90 days, as charts (Chart.js, fed from a
//! `data-chart` attribute, so the page needs no inline script) and as tables.

use super::i18n::Tr;
use super::{Chrome, Page, UiError, Viewer, fmt, render};
use crate::AppState;
use askama::Template;
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use voronka_domain::LeadStatus;
use voronka_store::Ts;
use voronka_store::analytics::SlaShare;

#[derive(Template)]
#[template(path = "ui/dashboard.html")]
struct DashboardPage {
    c: Chrome,
    days: i64,
    total: i64,
    by_channel_chart: String,
    funnel_chart: String,
    sla_chart: String,
    channels: Vec<(String, i64)>,
    funnel: Vec<(&'static str, i64)>,
    sla: SlaShare,
    sla_percent: String,
    /// Calls and chats from the inbound webhooks over the period.
    responses: voronka_store::hooks::ResponseStats,
    call_wait: String,
    chat_reply: String,
}

pub async fn page(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let days = match pairs.iter().find(|(k, _)| k == "days").map(|(_, v)| v.as_str()) {
        Some("7") => 7,
        Some("90") => 90,
        _ => 30,
    };
    let e = |e: voronka_store::StoreError| UiError::new(e, &v);
    let t = Tr(v.lang);
    let access = v.access();
    let now = st.store.now();
    let offset = fmt::offset_seconds(v.tz);
    // From the start of the local day `days - 1` days ago.
    let today = (now.micros() / 1_000_000 + offset).div_euclid(86400);
    let first_day = today - (days - 1);
    let from = Ts::from_micros((first_day * 86400 - offset) * 1_000_000).unwrap_or(now);
    let to = Ts::from(now.0 + chrono::Duration::seconds(1));

    let arrivals = st.store.arrivals(&access, from, to, offset).await.map_err(e)?;
    let mut by_channel: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for d in &arrivals.per_day {
        let i = (d.day - first_day).clamp(0, days - 1) as usize;
        by_channel.entry(d.channel.clone()).or_insert_with(|| vec![0; days as usize])[i] += d.count;
    }
    let labels: Vec<String> = (first_day..=today).map(|d| fmt::day(d, v.lang)).collect();
    let mut channels: Vec<(String, i64)> = by_channel.iter().map(|(ch, v)| (t.channel(ch), v.iter().sum())).collect();
    channels.sort_by_key(|c| std::cmp::Reverse(c.1));
    let total = channels.iter().map(|(_, n)| n).sum();
    let datasets: Vec<_> = by_channel.iter().map(|(ch, data)| json!({"label": t.channel(ch), "data": data})).collect();
    let by_channel_chart = json!({
        "type": "bar",
        "data": {"labels": labels, "datasets": datasets},
        "options": {"responsive": true, "animation": false, "scales": {"x": {"stacked": true}, "y": {"stacked": true, "beginAtZero": true}}}
    });

    let funnel_rows = &arrivals.funnel;
    let funnel: Vec<(&'static str, i64)> = LeadStatus::ALL
        .iter()
        .map(|s| {
            (t.get(&format!("status.{}", s.as_str())), funnel_rows.iter().find(|(k, _)| k == s.as_str()).map(|(_, n)| *n).unwrap_or(0))
        })
        .collect();
    let funnel_chart = json!({
        "type": "bar",
        "data": {"labels": funnel.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
                 "datasets": [{"label": t.get("dash.leads"), "data": funnel.iter().map(|(_, n)| *n).collect::<Vec<_>>()}]},
        "options": {"indexAxis": "y", "responsive": true, "animation": false, "plugins": {"legend": {"display": false}}}
    });

    let sla = st.store.sla_share(&access, from, to).await.map_err(e)?;
    let sla_chart = json!({
        "type": "doughnut",
        "data": {"labels": [t.get("dash.sla_within"), t.get("dash.sla_missed")],
                 "datasets": [{"data": [sla.within, sla.measured - sla.within]}]},
        "options": {"responsive": true, "animation": false}
    });
    let responses = st.store.response_stats(from, to).await.map_err(e)?;
    let secs = |x: Option<f64>| x.map(|s| format!("{} {}", fmt::num(s), t.get("dash.seconds"))).unwrap_or_else(|| "—".into());
    let c = Chrome::new(&v, "dashboard", t.get("nav.dashboard"));
    Ok(render(
        StatusCode::OK,
        &DashboardPage {
            c,
            days,
            total,
            by_channel_chart: by_channel_chart.to_string(),
            funnel_chart: funnel_chart.to_string(),
            sla_chart: sla_chart.to_string(),
            channels,
            funnel,
            sla_percent: sla.percent().map(|p| format!("{}%", fmt::num(p))).unwrap_or_else(|| "—".into()),
            sla,
            call_wait: secs(responses.call_wait_avg_seconds),
            chat_reply: secs(responses.chat_first_reply_avg_seconds),
            responses,
        },
    ))
}
