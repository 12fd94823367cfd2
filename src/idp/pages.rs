//! The identity provider's HTML pages. maud escapes every interpolated value,
//! so user-supplied text cannot become markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::config::Module;

const CSS: &str = r#"
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#eef1f6;color:#1d2433}
header{background:#0b1f3a;color:#fff;padding:12px 24px;display:flex;align-items:center;justify-content:space-between}
header .brand{font-weight:700;letter-spacing:.3px}header .brand span{color:#4fb3ff}
header form{margin:0}header button{background:none;border:1px solid #6b7c99;color:#fff;padding:4px 12px;border-radius:4px;cursor:pointer}
main{max-width:960px;margin:40px auto;padding:0 16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:28px;max-width:420px;margin:0 auto}
.wide{max-width:none}h1{font-size:22px;margin:0 0 18px}label{display:block;font-weight:600;margin:14px 0 4px}
input[type=text],input[type=password],input[type=email]{width:100%;padding:9px 10px;border:1px solid #b8c2d3;border-radius:4px;font:inherit}
button.primary{margin-top:20px;width:100%;padding:10px;background:#1565c0;color:#fff;border:0;border-radius:4px;font-weight:600;cursor:pointer}
button.secondary{margin-top:10px;width:100%;padding:10px;background:#fff;color:#1565c0;border:1px solid #1565c0;border-radius:4px;font-weight:600;cursor:pointer}
button.link{background:none;border:0;padding:0;color:#1565c0;text-decoration:underline;font:inherit;cursor:pointer}
code.secret{display:block;font-size:17px;letter-spacing:1px;padding:8px;background:#f7f9fc;border:1px solid #d8dfeb;border-radius:4px;margin:6px 0;word-break:break-all}
.error{background:#fdecea;border-left:4px solid #c62828;padding:10px 12px;margin-bottom:14px}
.notice{background:#e8f1fc;border-left:4px solid #1565c0;padding:10px 12px;margin-bottom:14px}
.muted{color:#5b6577;font-size:13px}.links{margin-top:16px;text-align:center}a{color:#1565c0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:14px;margin-top:10px}
.tile{display:block;background:#f7f9fc;border:1px solid #d8dfeb;border-radius:6px;padding:16px;text-decoration:none;color:inherit}
.tile:hover{border-color:#1565c0}.tile .icon{float:right;font-size:18px}.tile .name{font-weight:600}
dialog{border:0;border-radius:8px;box-shadow:0 4px 20px rgba(0,0,0,.3);padding:24px;min-width:320px}
dialog ul{list-style:none;padding:0}dialog li{margin:8px 0}
.who{font-size:13px;color:#c8d3e6}iframe.fc{display:none}
"#;

pub fn layout(title: &str, user: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – KaseyaOne" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    div.brand { "Kaseya" span { "One" } }
                    @if let Some((name, csrf)) = user {
                        div {
                            span.who { (name) " " }
                            form method="post" action="/logout/confirm" style="display:inline" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn message(error: Option<&str>, notice: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { div.error role="alert" { (e) } }
        @if let Some(n) = notice { div.notice role="status" { (n) } }
    }
}

pub fn login_identify(flow: &str, username: &str, company: &str, error: Option<&str>, notice: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            div.card {
                h1 { "Log in to KaseyaOne" }
                (message(error, notice))
                p.muted { "Enter the Username and Company Name for your KaseyaOne account." }
                form method="post" action="/login" {
                    input type="hidden" name="flow" value=(flow);
                    input type="hidden" name="step" value="identify";
                    label for="username" { "Username" }
                    input #username type="text" name="username" value=(username) autocomplete="username" required autofocus;
                    label for="company" { "Company Name" }
                    input #company type="text" name="company" value=(company) autocomplete="organization" required;
                    button.primary type="submit" { "Continue" }
                }
                div.links { a href="/recover" { "Can't Log In?" } }
            }
        },
    )
}

/// "Not you?": back to the first step with what was typed.
fn not_you(flow: &str) -> Markup {
    html! {
        form method="post" action="/login" style="display:inline" {
            input type="hidden" name="flow" value=(flow);
            input type="hidden" name="step" value="restart";
            button.link type="submit" { "Not you? Change username or company" }
        }
    }
}

pub fn login_password(flow: &str, username: &str, company: &str, error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            div.card {
                h1 { "Enter your password" }
                (message(error, None))
                p.muted { (username) " · " (company) }
                form method="post" action="/login" {
                    input type="hidden" name="flow" value=(flow);
                    input type="hidden" name="step" value="password";
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required autofocus;
                    button.primary type="submit" { "Continue" }
                }
                div.links { (not_you(flow)) }
                div.links { a href="/recover" { "Can't Log In?" } }
            }
        },
    )
}

pub fn login_code(flow: &str, username: &str, company: &str, error: Option<&str>) -> Markup {
    layout(
        "Verification code",
        None,
        html! {
            div.card {
                h1 { "Enter your verification code" }
                (message(error, None))
                p.muted { (username) " · " (company) }
                p.muted { "Open your authenticator app and enter the 6-digit verification code for KaseyaOne." }
                form method="post" action="/login" {
                    input type="hidden" name="flow" value=(flow);
                    input type="hidden" name="step" value="code";
                    label for="code" { "Verification code" }
                    input #code type="text" name="code" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" autocomplete="one-time-code" required autofocus;
                    button.primary type="submit" { "Verify" }
                }
                div.links { (not_you(flow)) }
                div.links { a href="/recover" { "Can't Log In?" } }
            }
        },
    )
}

pub fn error_page(title: &str, text: &str, link: Option<(&str, &str)>) -> Markup {
    layout(
        title,
        None,
        html! {
            div.card {
                h1 { (title) }
                p { (text) }
                @if let Some((href, label)) = link { p { a href=(href) { (label) } } }
            }
        },
    )
}

pub enum Tile<'a> {
    /// Unified Login on, one instance: straight in, at this URL (the
    /// module's login initiation, when its client has one).
    Arrow(&'a Module, String),
    /// Several instances: Choose an Instance.
    File(&'a Module),
    /// Unified Login off: the module's own login.
    Lock(&'a Module),
}

/// My Modules. `choose`: the module whose Choose an Instance is open,
/// with the URL that opens each of its instances.
pub fn home(display_name: &str, csrf: &str, tiles: &[Tile<'_>], choose: Option<(&Module, &[String])>) -> Markup {
    layout(
        "Home",
        Some((display_name, csrf)),
        html! {
            div.card.wide {
                h1 { "My Modules" }
                @if tiles.is_empty() {
                    p { "You have no modules yet." }
                }
                div.tiles {
                    @for t in tiles {
                        @match t {
                            Tile::Arrow(m, href) => a.tile.arrow href=(href) data-module=(m.name) {
                                span.icon title="Log in with KaseyaOne" { (crate::pages::TileKind::Arrow.icon()) } div.name { (m.display_name) }
                                div.muted { "Log In with KaseyaOne" }
                            },
                            Tile::File(m) => a.tile.file href={ "/?choose=" (m.name) } data-module=(m.name) {
                                span.icon title="Choose an instance" { (crate::pages::TileKind::File.icon()) } div.name { (m.display_name) }
                                div.muted { "Choose an instance (" (m.instances.len()) " instances)" }
                            },
                            Tile::Lock(m) => a.tile.lock href=(m.login_url.as_str()) data-module=(m.name) {
                                span.icon title="Log in with module credentials" { (crate::pages::TileKind::Lock.icon()) } div.name { (m.display_name) }
                                div.muted { "Log in with your module credentials" }
                            },
                        }
                    }
                }
                div.muted style="margin-top:22px" {
                    p { "You see all the modules you have access to where Log In with KaseyaOne has been enabled. If you're not seeing certain modules, check the following:" }
                    ul {
                        li { "Unified Login: the module must be connected to KaseyaOne via Unified Login." }
                        li { "Access permissions: make sure you're part of the access group assigned to that module." }
                    }
                    p { "If not, contact your KaseyaOne administrator for assistance. Once these conditions are met, eligible modules appear automatically." }
                }
            }
            @if let Some((m, hrefs)) = choose {
                dialog open aria-labelledby="choose-title" {
                    h1 #choose-title { "Choose an Instance" }
                    p.muted { (m.display_name) }
                    ul {
                        @for (i, href) in m.instances.iter().zip(hrefs) {
                            li { a.instance href=(href) { (i.display_name) } }
                        }
                    }
                    a href="/" { "Cancel" }
                }
            }
        },
    )
}

pub fn recover_menu() -> Markup {
    layout(
        "Can't Log In?",
        None,
        html! {
            div.card {
                h1 { "Can't Log In?" }
                p { "Request your username, company name, or a password reset should you forget one of them." }
                ul {
                    li { a href="/recover/password" { "Forgot password" } }
                    li { a href="/recover/username" { "Forgot username" } }
                    li { a href="/recover/company" { "Forgot company name" } }
                }
                div.links { a href="/login" { "Back to log in" } }
            }
        },
    )
}

/// Which recovery form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recover {
    Password,
    Username,
    Company,
}

pub fn recover_form(kind: Recover, error: Option<&str>) -> Markup {
    let (title, action, intro) = match kind {
        Recover::Password => (
            "Forgot password",
            "/recover/password",
            "Enter the Username and Company name associated with your account and then click Continue.",
        ),
        Recover::Username => (
            "Forgot username",
            "/recover/username",
            "Enter the email and Company name associated with your account and then click Continue.",
        ),
        Recover::Company => (
            "Forgot company name",
            "/recover/company",
            "Enter the email associated with your account and then click Continue.",
        ),
    };
    layout(
        title,
        None,
        html! {
            div.card {
                h1 { (title) }
                (message(error, None))
                p.muted { (intro) }
                form method="post" action=(action) {
                    @match kind {
                        Recover::Password => {
                            label for="username" { "Username" }
                            input #username type="text" name="username" required;
                            label for="company" { "Company Name" }
                            input #company type="text" name="company" required;
                        },
                        Recover::Username => {
                            label for="email" { "Email" }
                            input #email type="email" name="email" required;
                            label for="company" { "Company Name" }
                            input #company type="text" name="company" required;
                        },
                        Recover::Company => {
                            label for="email" { "Email" }
                            input #email type="email" name="email" required;
                        },
                    }
                    button.primary type="submit" { "Continue" }
                }
                div.links { a href="/login" { "Back to log in" } }
            }
        },
    )
}

pub fn recover_sent(kind: Recover) -> Markup {
    let (account, mail) = match kind {
        Recover::Password => ("your email and company name", "password reset email"),
        Recover::Username => ("your email and company name", "email with your username"),
        Recover::Company => ("your email", "email with your company name"),
    };
    layout(
        "Check your email",
        None,
        html! {
            div.card {
                h1 { "Check your email" }
                p { "You will receive an email with further instructions if there is an account associated with " (account) "." }
                p { "You should receive the " (mail) " in a few minutes. If you did not receive it:" }
                ul.muted {
                    li { "Ensure that it did not get caught in your spam filter/junk folder or automatically get moved to a folder by a rule." }
                    @if kind != Recover::Company {
                        li {
                            "Make sure you entered your company name correctly when submitting the request. To retrieve your company name, see "
                            a href="/recover/company" { "Forgot company name" } "."
                        }
                    }
                }
                div.links { a href="/login" { "Back to log in" } }
            }
        },
    )
}

pub fn reset_form(token: &str, error: Option<&str>) -> Markup {
    layout(
        "Choose a new password",
        None,
        html! {
            div.card {
                h1 { "Choose a new password" }
                (message(error, None))
                form method="post" action="/recover/reset" {
                    input type="hidden" name="token" value=(token);
                    label for="password" { "New password" }
                    input #password type="password" name="password" autocomplete="new-password" minlength="12" required;
                    label for="confirm" { "Confirm new password" }
                    input #confirm type="password" name="confirm" autocomplete="new-password" minlength="12" required;
                    button.primary type="submit" { "Set password" }
                }
            }
        },
    )
}

pub fn logout_confirm(
    csrf: &str,
    post_logout_redirect_uri: Option<&str>,
    state: Option<&str>,
    client_id: Option<&str>,
) -> Markup {
    layout(
        "Log out",
        None,
        html! {
            div.card {
                h1 { "Log out of KaseyaOne?" }
                p { "You will be logged out of KaseyaOne and of the modules you opened with it." }
                form method="post" action="/logout/confirm" {
                    input type="hidden" name="csrf" value=(csrf);
                    @if let Some(u) = post_logout_redirect_uri { input type="hidden" name="post_logout_redirect_uri" value=(u); }
                    @if let Some(s) = state { input type="hidden" name="state" value=(s); }
                    @if let Some(c) = client_id { input type="hidden" name="client_id" value=(c); }
                    button.primary type="submit" { "Log out" }
                }
            }
        },
    )
}

pub fn logged_out(frontchannel: &[String], next: Option<&str>) -> Markup {
    layout(
        "Logged out",
        None,
        html! {
            div.card {
                h1 { "You are logged out" }
                p { "Your KaseyaOne session has ended." }
                @for u in frontchannel { iframe.fc src=(u) title="logout" {} }
                @match next {
                    Some(n) => p { a href=(n) { "Continue" } },
                    None => p { a href="/login" { "Log in again" } },
                }
            }
        },
    )
}
