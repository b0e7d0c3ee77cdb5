//! `wxmp menu`, `wxmp kf` and `wxmp token`: the API client on the command line.
//!
//! [`args`] turns the command line into a [`args::Job`]; [`run`] does it and prints. Results
//! go to stdout (for `menu show`, only the TOML, so it can be redirected into a file that
//! `menu push` accepts), status and warnings to stderr. Exit codes: 0 done, 1 WeChat refused or
//! could not be reached, 2 usage, file or configuration error.
//!
//! This is where the menu meets the rules file (`--rules`): the API client itself knows
//! nothing of rules.

pub mod args;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use args::{Job, TokenJob};

use crate::api::media::{self, MediaType};
use crate::api::menu::{self, Menu};
use crate::api::token::{read_cache, Held};
use crate::api::{ApiConfig, ApiError, Client, Upload};
use crate::log::utc;
use crate::protocol::message::{Event, Kind, Message};
use crate::rules::{KeyMatch, Matcher, RuleSet};
use crate::text::redact_url;

/// Runs a job; returns the exit code.
pub fn run(job: Job) -> u8 {
    match job {
        Job::MenuCheck { file, rules } => menu_check(&file, rules.as_deref()),
        Job::MenuPush { file, rules, api } => menu_push(&file, rules.as_deref(), api),
        Job::MenuShow(api) => menu_show(api),
        Job::MenuDelete(api) => {
            let client = Client::new(api);
            finish(&client, client.delete_menu(), |()| {
                println!("menu deleted");
                0
            })
        }
        Job::KfSend {
            openid,
            message,
            api,
        } => {
            let client = Client::new(api);
            finish(&client, client.send_custom(&openid, &message), |()| {
                println!("kf send → {openid}: {} (sent)", message.summary());
                0
            })
        }
        Job::KfTyping {
            openid,
            cancel,
            api,
        } => {
            let client = Client::new(api);
            let (result, what) = if cancel {
                (client.cancel_typing(&openid), "CancelTyping")
            } else {
                (client.typing(&openid), "Typing")
            };
            finish(&client, result, |()| {
                println!("kf typing → {openid}: {what}");
                0
            })
        }
        Job::Token(job) => token(job),
        Job::MediaUpload {
            file,
            ty,
            temporary,
            title,
            introduction,
            api,
        } => upload(&file, ty, temporary, title, introduction, api),
        Job::MediaList { ty, api } => list(ty, api),
    }
}

/// `wxmp media upload`: the media_id alone on stdout, what was done on stderr.
fn upload(
    file: &Path,
    ty: Option<MediaType>,
    temporary: bool,
    title: Option<String>,
    introduction: Option<String>,
    api: ApiConfig,
) -> u8 {
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("wxmp: cannot read {}: {e}", file.display());
            return 2;
        }
    };
    let ty = match ty.or_else(|| media::sniff(&data).map(MediaType::of)) {
        Some(t) => t,
        None => {
            eprintln!(
                "wxmp: {} is not a picture, sound or video WeChat takes (by its content); WeChat takes jpg, png, gif, bmp, mp3, amr, wav, wma and mp4",
                file.display()
            );
            return 2;
        }
    };
    if let Err(e) = media::check(ty, &data) {
        eprintln!("wxmp: {}: {e}; nothing was sent", file.display());
        return 2;
    }
    let name = file
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let client = Client::new(api);
    let up = Upload {
        ty,
        name: &name,
        data: &data,
        title: title.as_deref().unwrap_or(""),
        introduction: introduction.as_deref().unwrap_or(""),
    };
    finish(&client, client.upload(&up, !temporary), |done| {
        println!("{}", done.media_id);
        let kind = if temporary { "temporary" } else { "permanent" };
        let kept = if temporary {
            "media/upload; WeChat keeps it 3 days"
        } else {
            "material/add_material"
        };
        eprintln!(
            "wxmp: uploaded {} ({} bytes) as a {kind} {ty} ({kept})",
            file.display(),
            data.len()
        );
        0
    })
}

/// `wxmp media list`: every page of `batchget_material`, one line per file.
fn list(ty: MediaType, api: ApiConfig) -> u8 {
    let client = Client::new(api);
    let mut offset = 0u64;
    let mut lines = Vec::new();
    let mut total = 0u64;
    // WeChat pages 20 at a time; the bound stops a total_count that never comes.
    for _ in 0..10_000 {
        let page = match client.list_materials(ty, offset, 20) {
            Ok(p) => p,
            Err(e) => return finish(&client, Err::<(), _>(e), |()| 0),
        };
        total = page["total_count"].as_u64().unwrap_or(0);
        let items = page["item"].as_array().cloned().unwrap_or_default();
        for item in &items {
            let when = item["update_time"].as_u64().map_or_else(String::new, utc);
            lines.push(format!(
                "{}  {when}  {}",
                item["media_id"].as_str().unwrap_or(""),
                item["name"].as_str().unwrap_or("")
            ));
        }
        offset += items.len() as u64;
        if items.is_empty() || offset >= total {
            break;
        }
    }
    finish(&client, Ok(()), |()| {
        for line in &lines {
            println!("{line}");
        }
        eprintln!("wxmp: {total} {ty} material(s)");
        0
    })
}

/// `wxmp menu check`: the menu's buttons, then a count.
fn menu_check(file: &Path, rules: Option<&Path>) -> u8 {
    match check(file, rules) {
        Err(code) => code,
        Ok(menu) => {
            for line in menu.describe() {
                println!("{line}");
            }
            let subs: usize = menu.buttons().iter().map(|b| b.sub_button.len()).sum();
            println!(
                "{}: {} buttons, {subs} sub-buttons OK",
                file.display(),
                menu.buttons().len()
            );
            0
        }
    }
}

/// `wxmp menu push`: checked first, so nothing is sent when the file is wrong.
fn menu_push(file: &Path, rules: Option<&Path>, api: ApiConfig) -> u8 {
    let menu = match check(file, rules) {
        Ok(menu) => menu,
        Err(code) => {
            eprintln!("wxmp: nothing was sent");
            return code;
        }
    };
    let client = Client::new(api);
    finish(&client, client.create_menu(&menu), |()| {
        println!(
            "menu pushed: {} buttons from {} (WeChat shows it when a user next opens the chat, within about 5 minutes)",
            menu.all_buttons().count(),
            file.display()
        );
        0
    })
}

/// `wxmp menu show`: the menu as a menu file, with warnings on stderr.
fn menu_show(api: ApiConfig) -> u8 {
    let client = Client::new(api);
    finish(&client, client.get_menu(), |value| {
        let buttons = match menu::buttons_of(&value) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("wxmp: WeChat's answer to menu/get is not a menu wxmp can read: {e}");
                return 1;
            }
        };
        print!("{}", menu::to_toml(&buttons));
        let count = buttons.len() + buttons.iter().map(|b| b.sub_button.len()).sum::<usize>();
        match Menu::from_buttons(buttons) {
            Ok(_) => eprintln!("wxmp: the menu has {count} buttons"),
            // A menu made elsewhere that wxmp would not push as it is; shown anyway.
            Err(e) => eprintln!(
                "wxmp: warning: wxmp menu push would refuse this menu as it is: {}",
                e.reason
            ),
        }
        let conditional = value
            .get("conditionalmenu")
            .and_then(|c| c.as_array())
            .map_or(0, Vec::len);
        if conditional > 0 {
            eprintln!("wxmp: {conditional} conditional menus (个性化菜单) are not shown");
        }
        0
    })
}

/// Prints the outcome of an API call and any token-cache problems; returns the exit code.
fn finish<T>(client: &Client, result: Result<T, ApiError>, ok: impl FnOnce(T) -> u8) -> u8 {
    for note in client.take_notes() {
        eprintln!("wxmp: warning: {note}");
    }
    match result {
        Ok(v) => ok(v),
        Err(e) => {
            eprintln!("wxmp: {e}");
            1
        }
    }
}

/// Reads and checks a menu file (and the rules it should match); prints errors and warnings.
fn check(file: &Path, rules: Option<&Path>) -> Result<Menu, u8> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("wxmp: cannot read {name}: {e}");
        2u8
    })?;
    let (menu, warnings) = Menu::parse_toml(&text).map_err(|e| {
        eprintln!("wxmp: {name}:{e}", e = located(&e));
        2u8
    })?;
    for w in &warnings {
        eprintln!("wxmp: warning: {name}:{}", located(w));
    }
    if let Some(rules) = rules {
        let rules_name = rules.display().to_string();
        let set = std::fs::read_to_string(rules)
            .map_err(|e| format!("cannot read {rules_name}: {e}"))
            .and_then(|t| RuleSet::parse(&t, &rules_name).map_err(|e| e.to_string()))
            .map_err(|e| {
                eprintln!("wxmp: {e}");
                2u8
            })?;
        for w in cross_check(&menu, &name, &set, &rules_name) {
            eprintln!("wxmp: warning: {w}");
        }
    }
    Ok(menu)
}

/// `LINE: reason`, or ` reason` without a line (the caller puts `file:` before it).
fn located(e: &crate::api::menu::MenuError) -> String {
    match e.line {
        Some(l) => format!("{l}: {}", e.reason),
        None => format!(" {}", e.reason),
    }
}

/// Click keys no rule answers, and rules' CLICK keys no button sends.
pub fn cross_check(menu: &Menu, menu_file: &str, rules: &RuleSet, rules_file: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let keys = menu.click_keys();
    for (key, line) in &keys {
        let click = Message::new(
            "gh_menu_check",
            "o_menu_check",
            0,
            Kind::Event(Event::Click {
                event_key: Some((*key).to_owned()),
            }),
        );
        if rules.decide(&click).rule.is_none() {
            let at = line.map_or(String::new(), |l| format!("{l}:"));
            warnings.push(format!(
                "{menu_file}:{at} no rule in {rules_file} answers click key {key:?}; a click on it gets the default ({})",
                rules.default_action()
            ));
        }
    }
    for (i, rule) in rules.rules().iter().enumerate() {
        let Matcher::Event {
            name,
            key: Some(key),
        } = &rule.matcher
        else {
            continue;
        };
        if !name.eq_ignore_ascii_case("CLICK") {
            continue;
        }
        let (sent, shown) = match key {
            KeyMatch::Exact(k) => (keys.iter().any(|(b, _)| b == k), format!("{k:?}")),
            KeyMatch::Regex(re) => (
                keys.iter().any(|(b, _)| re.is_match(b)),
                format!("/{}/", re.as_str()),
            ),
        };
        if !sent {
            warnings.push(format!(
                "{rules_file}:{}: rule {} answers CLICK key {shown}, which no button in {menu_file} sends",
                rule.line,
                i + 1
            ));
        }
    }
    warnings
}

fn token(job: TokenJob) -> u8 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (held, fetched) = match &job.fetch {
        Some(api) => {
            let client = Client::new(api.clone());
            let result = client.token();
            for note in client.take_notes() {
                eprintln!("wxmp: warning: {note}");
            }
            match result {
                Ok(h) => (Some(h), client.stats().token_fetches > 0),
                Err(e) => {
                    eprintln!("wxmp: {e}");
                    return 1;
                }
            }
        }
        None => {
            let cached = match &job.cache {
                Some(path) => match read_cache(path, &job.app_id, &job.api_base) {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("wxmp: warning: {e}");
                        None
                    }
                },
                None => None,
            };
            (cached, false)
        }
    };
    // With --show, stdout carries the token alone, so the report goes to stderr.
    let report = |line: String| {
        if job.show {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    match &job.cache {
        Some(p) => report(format!("token cache: {}", p.display())),
        None => report(
            "token cache: none ($XDG_CACHE_HOME and $HOME are unset; pass --token-cache FILE)"
                .into(),
        ),
    }
    let Some(held) = held.filter(|h| h.is_valid(now)) else {
        report(format!(
            "no valid token is cached for {} at {}; the next API command fetches one (or: wxmp token --fetch)",
            job.app_id,
            redact_url(&job.api_base)
        ));
        return u8::from(job.show);
    };
    report(describe(&held, now, fetched));
    if job.show {
        println!("{}", held.token.expose());
    }
    0
}

/// Where the token came from and when it expires, in two lines.
fn describe(h: &Held, now: u64, fetched: bool) -> String {
    let how = if fetched {
        "a token was fetched just now"
    } else {
        "a token is cached, fetched"
    };
    let left = h.expires_at.saturating_sub(now);
    let next = if h.is_fresh(now) {
        format!("wxmp fetches the next one from {}", utc(h.refresh_at()))
    } else {
        "it is due: the next API command fetches a new one".to_owned()
    };
    format!(
        "{how} with {} {}{} at {}\nit expires at {} (in {} min {} s); {next}",
        h.endpoint.method(),
        redact_url(&h.api_base),
        h.endpoint.path(),
        utc(h.fetched_at),
        utc(h.expires_at),
        left / 60,
        left % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_menu_and_rules_agree() {
        let root = env!("CARGO_MANIFEST_DIR");
        let menu_text = std::fs::read_to_string(format!("{root}/examples/menu.toml")).unwrap();
        let rules_text = std::fs::read_to_string(format!("{root}/examples/rules.toml")).unwrap();
        let (menu, _) = Menu::parse_toml(&menu_text).unwrap();
        let rules = RuleSet::parse(&rules_text, "rules.toml").unwrap();
        assert_eq!(
            cross_check(&menu, "menu.toml", &rules, "rules.toml"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unanswered_keys_and_unsent_rule_keys_are_warned_about() {
        let (menu, _) =
            Menu::parse_toml("[[button]]\nname = \"a\"\ntype = \"click\"\nkey = \"LONELY\"\n")
                .unwrap();
        let rules = RuleSet::parse(
            "[[rules]]\nevent = \"CLICK\"\nkey = \"GONE\"\nreply.text = \"x\"\n\n[[rules]]\nevent = \"click\"\nkey_regex = '^V\\d+'\nreply.text = \"y\"\n",
            "r.toml",
        )
        .unwrap();
        let w = cross_check(&menu, "m.toml", &rules, "r.toml");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("m.toml:4: no rule in r.toml answers click key \"LONELY\""),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("r.toml:1: rule 1 answers CLICK key \"GONE\""),
            "{w:?}"
        );
        assert!(w[2].contains("rule 2 answers CLICK key /^V\\d+/"), "{w:?}");
    }
}
