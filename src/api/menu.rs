//! The custom menu (自定义菜单): a TOML file → a validated [`Menu`] → WeChat's JSON, and back
//! from WeChat's JSON to TOML that the same parser accepts.
//!
//! The file is WeChat's JSON spelled as TOML: `[[button]]` tables with `name`, `type` and the
//! field the type needs, and `[[button.sub_button]]` tables for a sub-menu. A [`Menu`] exists
//! only if it meets WeChat's limits (button counts, byte lengths, the fields each type needs),
//! so `wxmp menu push` can refuse a bad file before anything is sent; errors and warnings carry
//! the line of the offending key. Out of scope: conditional menus (个性化菜单).

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;

pub const MAX_BUTTONS: usize = 3;
pub const MAX_SUB_BUTTONS: usize = 5;
/// Bytes of UTF-8: a Chinese character is 3, so about 5 of them at the top level.
pub const MAX_NAME_BYTES: usize = 16;
/// The current documentation's limit for a sub-button's name (older pages said 40).
pub const MAX_SUB_NAME_BYTES: usize = 60;
pub const MAX_KEY_BYTES: usize = 128;
pub const MAX_URL_BYTES: usize = 1024;

/// A button's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonType {
    Click,
    View,
    ScancodePush,
    ScancodeWaitmsg,
    PicSysphoto,
    PicPhotoOrAlbum,
    PicWeixin,
    LocationSelect,
    MediaId,
    ViewLimited,
    ArticleId,
    ArticleViewLimited,
    Miniprogram,
}

/// A field a button's type may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Key,
    Url,
    Appid,
    Pagepath,
    MediaId,
    ArticleId,
}

impl Field {
    /// In the order the TOML output writes them.
    pub const ALL: [Field; 6] = [
        Field::Key,
        Field::Url,
        Field::Appid,
        Field::Pagepath,
        Field::MediaId,
        Field::ArticleId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::Url => "url",
            Field::Appid => "appid",
            Field::Pagepath => "pagepath",
            Field::MediaId => "media_id",
            Field::ArticleId => "article_id",
        }
    }
}

impl ButtonType {
    pub const ALL: [ButtonType; 13] = [
        ButtonType::Click,
        ButtonType::View,
        ButtonType::ScancodePush,
        ButtonType::ScancodeWaitmsg,
        ButtonType::PicSysphoto,
        ButtonType::PicPhotoOrAlbum,
        ButtonType::PicWeixin,
        ButtonType::LocationSelect,
        ButtonType::MediaId,
        ButtonType::ViewLimited,
        ButtonType::ArticleId,
        ButtonType::ArticleViewLimited,
        ButtonType::Miniprogram,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ButtonType::Click => "click",
            ButtonType::View => "view",
            ButtonType::ScancodePush => "scancode_push",
            ButtonType::ScancodeWaitmsg => "scancode_waitmsg",
            ButtonType::PicSysphoto => "pic_sysphoto",
            ButtonType::PicPhotoOrAlbum => "pic_photo_or_album",
            ButtonType::PicWeixin => "pic_weixin",
            ButtonType::LocationSelect => "location_select",
            ButtonType::MediaId => "media_id",
            ButtonType::ViewLimited => "view_limited",
            ButtonType::ArticleId => "article_id",
            ButtonType::ArticleViewLimited => "article_view_limited",
            ButtonType::Miniprogram => "miniprogram",
        }
    }

    pub fn parse(name: &str) -> Option<ButtonType> {
        ButtonType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Every field this type needs; it takes no others. A mini program button needs a web
    /// page too: WeChat clients without mini program support open the `url`.
    pub fn fields(self) -> &'static [Field] {
        match self {
            ButtonType::View => &[Field::Url],
            ButtonType::MediaId | ButtonType::ViewLimited => &[Field::MediaId],
            ButtonType::ArticleId | ButtonType::ArticleViewLimited => &[Field::ArticleId],
            ButtonType::Miniprogram => &[Field::Url, Field::Appid, Field::Pagepath],
            _ => &[Field::Key],
        }
    }
}

impl fmt::Display for ButtonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One button as WeChat's JSON has it. Only a [`Menu`] guarantees it is valid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Button {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagepath: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_button: Vec<Button>,
    /// Where the button and its keys are in a TOML file (empty for JSON).
    #[serde(skip)]
    lines: Lines,
}

#[derive(Debug, Clone, Default)]
struct Lines {
    header: Option<usize>,
    keys: Vec<(&'static str, usize)>,
}

impl Lines {
    fn of(&self, key: &str) -> Option<usize> {
        self.keys
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, l)| *l)
            .or(self.header)
    }
}

impl Button {
    pub fn field(&self, f: Field) -> Option<&String> {
        match f {
            Field::Key => self.key.as_ref(),
            Field::Url => self.url.as_ref(),
            Field::Appid => self.appid.as_ref(),
            Field::Pagepath => self.pagepath.as_ref(),
            Field::MediaId => self.media_id.as_ref(),
            Field::ArticleId => self.article_id.as_ref(),
        }
    }

    /// The line of its `[[button]]` header in a TOML file.
    pub fn line(&self) -> Option<usize> {
        self.lines.header
    }

    /// The validated type (`None` for a button that opens a sub-menu).
    pub fn button_type(&self) -> Option<ButtonType> {
        self.kind.as_deref().and_then(ButtonType::parse)
    }

    /// What the button does, in one phrase: `click V1001_TODAY_MUSIC`, `view https://…`.
    pub fn action(&self) -> String {
        let Some(ty) = self.button_type() else {
            return format!("{} sub-buttons", self.sub_button.len());
        };
        let values: Vec<&str> = ty
            .fields()
            .iter()
            .filter_map(|f| self.field(*f).map(String::as_str))
            .collect();
        format!("{ty} {}", values.join(" "))
    }
}

/// A mistake in a menu, and the line it is on when it came from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuError {
    pub line: Option<usize>,
    pub reason: String,
    /// The errcode WeChat answers the same mistake with (40016…40027), for the fake API.
    pub errcode: i64,
}

impl fmt::Display for MenuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{l}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for MenuError {}

/// A menu WeChat accepts.
#[derive(Debug, Clone)]
pub struct Menu {
    buttons: Vec<Button>,
}

impl Menu {
    /// Validates buttons (from a file or from WeChat); warnings are mistakes WeChat accepts.
    pub fn from_buttons(buttons: Vec<Button>) -> Result<(Menu, Vec<MenuError>), MenuError> {
        let mut warnings = Vec::new();
        if buttons.is_empty() {
            return Err(MenuError {
                line: None,
                reason: "the menu has no buttons: add a [[button]] with a name and a type".into(),
                errcode: 40016,
            });
        }
        if let Some(extra) = buttons.get(MAX_BUTTONS) {
            return Err(MenuError {
                line: extra.line(),
                reason: format!(
                    "button {} ({}): WeChat allows {MAX_BUTTONS} top-level buttons, this file has {}",
                    MAX_BUTTONS + 1,
                    extra.name,
                    buttons.len()
                ),
                errcode: 40016,
            });
        }
        let mut keys: Vec<(String, String)> = Vec::new();
        for (i, b) in buttons.iter().enumerate() {
            check(b, &format!("{}", i + 1), true, &mut keys, &mut warnings)?;
        }
        Ok((Menu { buttons }, warnings))
    }

    /// Parses and validates a menu file's text.
    pub fn parse_toml(text: &str) -> Result<(Menu, Vec<MenuError>), MenuError> {
        let raw: RawMenu = toml::from_str(text).map_err(|e| MenuError {
            line: e.span().map(|s| line_of(text, s.start)),
            reason: e.message().trim().to_owned(),
            errcode: 40017,
        })?;
        let buttons = raw.button.into_iter().map(|b| b.located(text)).collect();
        Menu::from_buttons(buttons)
    }

    /// Reads WeChat's JSON: a `menu/create` body (`{"button":[…]}`) or a `menu/get` answer
    /// (`{"menu":{"button":[…]}}`).
    pub fn from_json(value: &Value) -> Result<(Menu, Vec<MenuError>), MenuError> {
        Menu::from_buttons(buttons_of(value)?)
    }

    pub fn buttons(&self) -> &[Button] {
        &self.buttons
    }

    /// The `menu/create` body.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "button": self.buttons })
    }

    /// A menu file that [`Menu::parse_toml`] reads back to the same menu.
    pub fn to_toml(&self) -> String {
        to_toml(&self.buttons)
    }

    /// One line per button, sub-buttons indented: what `wxmp menu check` prints.
    pub fn describe(&self) -> Vec<String> {
        let at = |b: &Button| b.line().map_or(String::new(), |l| format!("  (line {l})"));
        let mut lines = Vec::new();
        for (i, b) in self.buttons.iter().enumerate() {
            lines.push(format!("{:>3}. {}: {}{}", i + 1, b.name, b.action(), at(b)));
            for (j, s) in b.sub_button.iter().enumerate() {
                lines.push(format!(
                    "     {}.{} {}: {}{}",
                    i + 1,
                    j + 1,
                    s.name,
                    s.action(),
                    at(s)
                ));
            }
        }
        lines
    }

    /// Every button, sub-buttons included.
    pub fn all_buttons(&self) -> impl Iterator<Item = &Button> {
        self.buttons
            .iter()
            .flat_map(|b| std::iter::once(b).chain(b.sub_button.iter()))
    }

    /// The keys of `click` buttons (what a rule's `event = "CLICK"` sees as EventKey), with
    /// their lines.
    pub fn click_keys(&self) -> Vec<(&str, Option<usize>)> {
        self.all_buttons()
            .filter(|b| b.button_type() == Some(ButtonType::Click))
            .filter_map(|b| b.key.as_deref().map(|k| (k, b.lines.of("key"))))
            .collect()
    }
}

/// The buttons of WeChat's JSON, unchecked: a `menu/create` body (`{"button":[…]}`) or a
/// `menu/get` answer (`{"menu":{"button":[…]}}`).
pub fn buttons_of(value: &Value) -> Result<Vec<Button>, MenuError> {
    let buttons = value
        .get("menu")
        .unwrap_or(value)
        .get("button")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(buttons).map_err(|e| MenuError {
        line: None,
        reason: format!("not a menu: {e}"),
        errcode: 40017,
    })
}

/// Buttons as a menu file: `[[button]]` tables, `[[button.sub_button]]` under them.
pub fn to_toml(buttons: &[Button]) -> String {
    let mut out = String::new();
    for b in buttons {
        out.push_str("[[button]]\n");
        toml_fields(&mut out, b);
        for s in &b.sub_button {
            out.push_str("\n[[button.sub_button]]\n");
            toml_fields(&mut out, s);
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// Checks one button; `top` for a top-level one. `keys` collects (key, position) to warn about
/// two buttons sending the same key.
fn check(
    b: &Button,
    pos: &str,
    top: bool,
    keys: &mut Vec<(String, String)>,
    warnings: &mut Vec<MenuError>,
) -> Result<(), MenuError> {
    let at = At::new(b, pos, top);
    check_name(&at)?;
    if !b.sub_button.is_empty() {
        check_parent(&at)?;
        for (j, s) in b.sub_button.iter().enumerate() {
            check(s, &format!("{pos}.{}", j + 1), false, keys, warnings)?;
        }
        return Ok(());
    }
    check_leaf(&at)?;
    if let Some(key) = b.key.as_deref() {
        if let Some((_, first)) = keys.iter().find(|(k, _)| k == key) {
            warnings.push(at.fail(
                "key",
                0,
                format!("key {key:?} is also button {first}'s, so both send the same event"),
            ));
        } else {
            keys.push((key.to_owned(), pos.to_owned()));
        }
    }
    Ok(())
}

/// The button being checked, with how its errors name it.
struct At<'a> {
    b: &'a Button,
    top: bool,
    label: String,
}

impl<'a> At<'a> {
    fn new(b: &'a Button, pos: &str, top: bool) -> At<'a> {
        let label = if b.name.is_empty() {
            format!("button {pos}")
        } else {
            format!("button {pos} ({})", b.name)
        };
        At { b, top, label }
    }

    /// An error at the line of `key` in this button.
    fn fail(&self, key: &str, errcode: i64, reason: String) -> MenuError {
        MenuError {
            line: self.b.lines.of(key),
            reason: format!("{}: {reason}", self.label),
            errcode,
        }
    }

    /// The fields this button sets.
    fn present(&self) -> Vec<Field> {
        Field::ALL
            .into_iter()
            .filter(|f| self.b.field(*f).is_some())
            .collect()
    }
}

/// A name is required, and WeChat counts its length in bytes, with a tighter limit below the top.
fn check_name(at: &At<'_>) -> Result<(), MenuError> {
    let b = at.b;
    let (name_max, name_code) = if at.top {
        (MAX_NAME_BYTES, 40018)
    } else {
        (MAX_SUB_NAME_BYTES, 40025)
    };
    if b.name.trim().is_empty() {
        return Err(at.fail("name", name_code, "needs a name".into()));
    }
    if b.name.len() > name_max {
        return Err(at.fail(
            "name",
            name_code,
            format!(
                "the name is {} bytes; WeChat allows {name_max} for a {} (a Chinese character is 3 bytes)",
                b.name.len(),
                if at.top { "top-level button" } else { "sub-button" }
            ),
        ));
    }
    Ok(())
}

/// A button with sub-buttons only opens them: it is top-level, has no type or fields of its
/// own, and no more sub-buttons than WeChat shows.
fn check_parent(at: &At<'_>) -> Result<(), MenuError> {
    let b = at.b;
    if !at.top {
        return Err(at.fail(
            "sub_button",
            40023,
            "a sub-button cannot have sub-buttons: WeChat menus have two levels".into(),
        ));
    }
    if let Some(first) = at.present().first() {
        return Err(at.fail(
            first.name(),
            40017,
            format!("a button with sub-buttons only opens them, so it takes no {}; drop it, or the sub-buttons", first.name()),
        ));
    }
    if b.kind.is_some() {
        return Err(at.fail(
            "type",
            40017,
            "a button with sub-buttons only opens them, so it takes no type; drop it, or the sub-buttons".into(),
        ));
    }
    if let Some(extra) = b.sub_button.get(MAX_SUB_BUTTONS) {
        return Err(MenuError {
            line: extra.line(),
            reason: format!(
                "{}: WeChat allows {MAX_SUB_BUTTONS} sub-buttons, this one has {}",
                at.label,
                b.sub_button.len()
            ),
            errcode: 40023,
        });
    }
    Ok(())
}

/// A leaf button has a known type and exactly the fields that type takes, each valid.
fn check_leaf(at: &At<'_>) -> Result<(), MenuError> {
    let b = at.b;
    let type_code = if at.top { 40017 } else { 40024 };
    let Some(kind) = &b.kind else {
        let reason = if at.top {
            "needs a type (click, view, ...) or [[button.sub_button]] entries"
        } else {
            "needs a type (click, view, ...)"
        };
        return Err(at.fail("name", type_code, reason.into()));
    };
    let Some(ty) = ButtonType::parse(kind) else {
        let all: Vec<&str> = ButtonType::ALL.iter().map(|t| t.name()).collect();
        return Err(at.fail(
            "type",
            type_code,
            format!(
                "unknown type {kind:?}; WeChat's types are {}",
                all.join(", ")
            ),
        ));
    };
    let needs: Vec<&str> = ty.fields().iter().map(|f| f.name()).collect();
    // A field that does not fit first: it says more about the mistake (a url on a click
    // button usually means type = "view") than the field that is missing.
    if let Some(f) = at.present().iter().find(|f| !ty.fields().contains(f)) {
        return Err(at.fail(
            f.name(),
            type_code,
            format!(
                "a {ty} button takes {}, not {}{}",
                needs.join(" and "),
                f.name(),
                hint(*f)
            ),
        ));
    }
    for f in ty.fields() {
        match b.field(*f) {
            None => {
                return Err(at.fail(
                    "type",
                    type_code,
                    format!("a {ty} button needs {}", needs.join(" and ")),
                ))
            }
            Some(v) => {
                check_value(*f, v, at.top).map_err(|(code, r)| at.fail(f.name(), code, r))?
            }
        }
    }
    Ok(())
}

/// Which type probably was meant when a field does not fit.
fn hint(f: Field) -> &'static str {
    match f {
        Field::Url => " (a web page: type = \"view\")",
        Field::Key => " (an event with a key: type = \"click\")",
        _ => "",
    }
}

fn check_value(f: Field, v: &str, top: bool) -> Result<(), (i64, String)> {
    let (key_code, url_code) = if top { (40019, 40020) } else { (40026, 40027) };
    if v.trim().is_empty() {
        return Err((key_code, format!("{} is empty", f.name())));
    }
    match f {
        Field::Key if v.len() > MAX_KEY_BYTES => Err((
            key_code,
            format!(
                "the key is {} bytes; WeChat allows {MAX_KEY_BYTES}",
                v.len()
            ),
        )),
        Field::Url if v.len() > MAX_URL_BYTES => Err((
            url_code,
            format!(
                "the url is {} bytes; WeChat allows {MAX_URL_BYTES}",
                v.len()
            ),
        )),
        Field::Url if !(v.starts_with("http://") || v.starts_with("https://")) => Err((
            url_code,
            format!("the url {v:?} must start with http:// or https://"),
        )),
        _ => Ok(()),
    }
}

fn toml_fields(out: &mut String, b: &Button) {
    let mut line = |k: &str, v: &str| {
        out.push_str(&format!("{k} = {}\n", toml::Value::String(v.to_owned())));
    };
    line("name", &b.name);
    if let Some(t) = &b.kind {
        line("type", t);
    }
    for f in Field::ALL {
        if let Some(v) = b.field(f) {
            line(f.name(), v);
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMenu {
    #[serde(default)]
    button: Vec<Spanned<RawButton>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawButton {
    name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    appid: Option<Spanned<String>>,
    pagepath: Option<Spanned<String>>,
    media_id: Option<Spanned<String>>,
    article_id: Option<Spanned<String>>,
    #[serde(default)]
    sub_button: Vec<Spanned<RawButton>>,
}

/// Turns a spanned raw table into a [`Button`] with its lines (a trait, because `Spanned` is
/// toml's type).
trait Locate {
    fn located(self, text: &str) -> Button;
}

impl Locate for Spanned<RawButton> {
    /// The button, with the line of its header and of each key.
    fn located(self, text: &str) -> Button {
        let header: Range<usize> = self.span();
        let raw = self.into_inner();
        let mut keys = Vec::new();
        let mut take = |name: &'static str, v: Option<Spanned<String>>| {
            v.map(|s| {
                keys.push((name, line_of(text, s.span().start)));
                s.into_inner()
            })
        };
        let name = take("name", raw.name).unwrap_or_default();
        let kind = take("type", raw.kind);
        let key = take("key", raw.key);
        let url = take("url", raw.url);
        let appid = take("appid", raw.appid);
        let pagepath = take("pagepath", raw.pagepath);
        let media_id = take("media_id", raw.media_id);
        let article_id = take("article_id", raw.article_id);
        let sub_button: Vec<Button> = raw
            .sub_button
            .into_iter()
            .map(|s| s.located(text))
            .collect();
        if let Some(l) = sub_button.first().and_then(Button::line) {
            keys.push(("sub_button", l));
        }
        Button {
            name,
            kind,
            key,
            url,
            appid,
            pagepath,
            media_id,
            article_id,
            sub_button,
            lines: Lines {
                header: Some(line_of(text, header.start)),
                keys,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/menu.toml");

    fn error(text: &str) -> MenuError {
        Menu::parse_toml(text).map(|_| ()).unwrap_err()
    }

    #[test]
    fn the_example_menu_is_valid_and_sends_the_rules_click_key() {
        let (menu, warnings) = Menu::parse_toml(EXAMPLE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(menu
            .click_keys()
            .iter()
            .any(|(k, _)| *k == "V1001_TODAY_MUSIC"));
    }

    #[test]
    fn json_and_toml_round_trip_to_the_same_menu() {
        let (menu, _) = Menu::parse_toml(EXAMPLE).unwrap();
        let json = menu.to_json();
        let (from_json, _) = Menu::from_json(&json).unwrap();
        let toml = from_json.to_toml();
        let (again, _) = Menu::parse_toml(&toml).unwrap();
        assert_eq!(again.to_json(), json);
        // menu/get wraps the same buttons in "menu", with empty sub_button lists on leaves.
        let wrapped = serde_json::json!({"menu": {"button": [
            {"type":"click","name":"今日歌曲","key":"K","sub_button":[]}
        ], "menuid": 208396938}});
        let (got, _) = Menu::from_json(&wrapped).unwrap();
        assert_eq!(
            got.to_toml(),
            "[[button]]\nname = \"今日歌曲\"\ntype = \"click\"\nkey = \"K\"\n"
        );
        // Quotes, backslashes and newlines survive.
        let odd = serde_json::json!({"button":[{"type":"click","name":"a\"b\\c","key":"k\n'x'"}]});
        let (m, _) = Menu::from_json(&odd).unwrap();
        let (back, _) = Menu::parse_toml(&m.to_toml()).unwrap();
        assert_eq!(back.to_json(), m.to_json());
    }

    #[test]
    fn wechats_limits_are_enforced_at_the_offending_line() {
        let four = "[[button]]\nname=\"a\"\ntype=\"click\"\nkey=\"a\"\n".repeat(4);
        let e = error(&four);
        assert_eq!(e.line, Some(13), "{e}");
        assert!(e.reason.contains("allows 3 top-level buttons"), "{e}");

        let mut six = "[[button]]\nname = \"m\"\n".to_owned();
        for i in 0..6 {
            six.push_str(&format!(
                "[[button.sub_button]]\nname = \"s{i}\"\ntype = \"click\"\nkey = \"k{i}\"\n"
            ));
        }
        let e = error(&six);
        assert_eq!(e.line, Some(23), "{e}");
        assert!(e.reason.contains("allows 5 sub-buttons"), "{e}");

        let long = "[[button]]\ntype = \"click\"\nname = \"今日歌曲推荐\"\nkey = \"k\"\n";
        let e = error(long);
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("18 bytes; WeChat allows 16"), "{e}");
        // 60 bytes are fine in a sub-menu, 61 are not.
        let sub = |name: &str| {
            format!("[[button]]\nname = \"m\"\n[[button.sub_button]]\nname = \"{name}\"\ntype = \"click\"\nkey = \"k\"\n")
        };
        assert!(Menu::parse_toml(&sub(&"a".repeat(60))).is_ok());
        let e = error(&sub(&"a".repeat(61)));
        assert_eq!((e.line, e.errcode), (Some(4), 40025));

        let key = format!(
            "[[button]]\nname = \"a\"\ntype = \"click\"\nkey = \"{}\"\n",
            "k".repeat(129)
        );
        let e = error(&key);
        assert_eq!(e.line, Some(4));
        assert!(e.reason.contains("129 bytes; WeChat allows 128"), "{e}");
        let url = format!(
            "[[button]]\nname = \"a\"\ntype = \"view\"\nurl = \"https://e.com/{}\"\n",
            "u".repeat(1024)
        );
        assert!(error(&url).reason.contains("WeChat allows 1024"));
    }

    #[test]
    fn each_type_needs_its_own_fields_and_no_others() {
        let one = |body: &str| format!("[[button]]\nname = \"a\"\n{body}");
        for ok in [
            "type = \"click\"\nkey = \"K\"",
            "type = \"view\"\nurl = \"https://e.com/\"",
            "type = \"scancode_waitmsg\"\nkey = \"K\"",
            "type = \"location_select\"\nkey = \"K\"",
            "type = \"media_id\"\nmedia_id = \"M\"",
            "type = \"article_view_limited\"\narticle_id = \"A\"",
            "type = \"miniprogram\"\nurl = \"https://e.com/\"\nappid = \"wx1\"\npagepath = \"pages/index\"",
        ] {
            assert!(Menu::parse_toml(&one(ok)).is_ok(), "{ok}");
        }
        let e = error(&one("type = \"click\""));
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("a click button needs key"), "{e}");
        let e = error(&one("type = \"click\"\nurl = \"https://e.com/\""));
        assert_eq!(e.line, Some(4));
        assert!(
            e.reason.contains("takes key, not url") && e.reason.contains("view"),
            "{e}"
        );
        let e = error(&one("type = \"miniprogram\"\nurl = \"https://e.com/\""));
        assert!(e.reason.contains("needs url and appid and pagepath"), "{e}");
        let e = error(&one("type = \"clik\"\nkey = \"K\""));
        assert_eq!(e.line, Some(3));
        assert!(
            e.reason.contains("unknown type \"clik\"") && e.reason.contains("click,"),
            "{e}"
        );
        let e = error(&one("type = \"view\"\nurl = \"www.e.com\""));
        assert!(e.reason.contains("http:// or https://"), "{e}");
        let e = error(&one(""));
        assert!(e.reason.contains("needs a type"), "{e}");
    }

    #[test]
    fn structure_mistakes_are_located() {
        let e = error("[[button]]\nname = \"a\"\nnmae = \"b\"\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("unknown field `nmae`"), "{e}");
        let e = error("[[button]]\nname = \"m\"\ntype = \"click\"\n[[button.sub_button]]\nname = \"s\"\ntype = \"click\"\nkey = \"k\"\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("takes no type"), "{e}");
        assert!(error("").reason.contains("no buttons"));
        let e = error("[[button]]\ntype = \"click\"\nkey = \"k\"\n");
        assert_eq!(e.line, Some(1));
        assert!(e.reason.contains("button 1: needs a name"), "{e}");
        let e = error("[[button]]\nname = \"a\"\ntype = \"click\"\nkey = 5\n");
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn the_same_key_twice_is_a_warning() {
        let text = "[[button]]\nname = \"a\"\ntype = \"click\"\nkey = \"K\"\n\n[[button]]\nname = \"m\"\n[[button.sub_button]]\nname = \"b\"\ntype = \"click\"\nkey = \"K\"\n";
        let (_, warnings) = Menu::parse_toml(text).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].line, Some(11));
        assert!(warnings[0]
            .reason
            .contains("button 2.1 (b): key \"K\" is also button 1's"));
    }

    #[test]
    fn the_tree_lists_every_button_with_its_line() {
        let (menu, _) = Menu::parse_toml(EXAMPLE).unwrap();
        let tree = menu.describe().join("\n");
        assert!(
            tree.contains("1. 今日歌曲: click V1001_TODAY_MUSIC  (line"),
            "{tree}"
        );
        assert!(tree.contains("     2.1 "), "{tree}");
    }
}
