use voronka_domain::{Phone, PhoneRegion};
fn main() {
    let r = PhoneRegion::default();
    let t = std::time::Instant::now();
    let n = 200_000;
    let mut ok = 0;
    for i in 0..n {
        let s = format!("+79{:09}", i * 7919 % 999_999_999);
        if Phone::parse(&s, r).is_some() { ok += 1; }
    }
    println!("{} ns per parse, {ok} ok", t.elapsed().as_nanos() / n as u128);
    let t = std::time::Instant::now();
    for i in 0..n {
        let s = format!("{{\"name\":\"Нагрузка {i}\",\"phone\":\"+79{:09}\",\"email\":\"bench{i}@example.ru\",\"company\":\"ООО Тест\",\"channel\":\"web_form\",\"campaign\":\"bench\",\"utm\":{{\"source\":\"yandex\",\"medium\":\"cpc\",\"campaign\":\"bench\"}},\"message\":\"Хочу узнать цену\"}}", i * 7919 % 999_999_999);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let d = voronka_domain::lead::IntakeDefaults { channel: "api".into(), campaign: None, region: r };
        let l = voronka_domain::LeadInput::from_json(v, &d).unwrap();
        std::hint::black_box(l);
    }
    println!("{} ns per full parse+validate", t.elapsed().as_nanos() / n as u128);
}
