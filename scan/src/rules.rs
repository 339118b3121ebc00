//! The built-in ruleset of well-known secret formats: cloud credentials,
//! source-hosting and package-registry tokens, chat, payment and mail API
//! keys, private keys, JWTs, passwords in connection strings and AI-provider
//! keys.
//!
//! A rule is a regex whose named group `secret` holds the secret itself, the
//! literal keywords at least one of which every match contains (the engine's
//! prefilter runs a rule only where one of them occurs), an optional check of
//! the candidate (a real checksum where the format has one: CRC32/base62 for
//! GitHub and npm tokens, bech32 for age keys; otherwise structure: JWT parts
//! that decode to JSON, an Azure key that decodes to 64 bytes, a Discord token
//! whose first part is a numeric id; or, for random tokens, that the value
//! looks random rather than like a placeholder), and a sample generator that
//! makes valid secrets in realistic lines for tests and labelled corpora.
//!
//! Precision choices:
//! - Patterns are anchored on word boundaries or explicit delimiters, so a
//!   token inside a longer token does not match. `\b` in the patterns below is
//!   compiled as an ASCII word boundary (`(?-u:\b)`), which the regex crate's
//!   fast DFA engines support on any input.
//! - Formats without a distinctive prefix (AWS secret access keys, Heroku API
//!   keys, Bitbucket app passwords, Okta tokens, Discord bot tokens) are only
//!   matched in the context of a key name or service name.
//! - AWS's documentation credentials (`AKIAIOSFODNN7EXAMPLE`,
//!   `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`) are NOT reported: they are in
//!   countless READMEs and tutorials and are not valid credentials.
//! - Passwords in connection strings that are obvious placeholders or
//!   defaults (`password`, `changeme`, `guest`, `${VAR}`, `<password>`,
//!   `****`, `%(password)s`, ...) are not reported.

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use fastrand::Rng;
use regex::Regex;
use serde_json::Value;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// A structure or checksum check on a candidate secret (the text of the regex's `secret` capture group); false = not a secret.
pub type Check = fn(&str) -> bool;

pub struct Rule {
    /// Stable id, e.g. "aws-access-key-id".
    pub id: &'static str,
    pub description: &'static str,
    pub severity: Severity,
    /// Literal substrings, at least one of which every match contains (used as a fast prefilter,
    /// matched case-sensitively on the raw bytes). Choose them so that EVERY match of `pattern` contains one of them.
    pub keywords: &'static [&'static str],
    /// The regex; it must have a named group `secret` holding the secret itself.
    pub pattern: Regex,
    /// Extra validation of the `secret` group (checksum, structure); None = regex only.
    pub check: Option<Check>,
    /// Makes a random VALID example secret, embedded in a realistic line of code/config
    /// (e.g. `aws_access_key_id = "AKIA..."`); returns (line, secret) where `secret` appears in `line`
    /// and is exactly what the `secret` group of `pattern` captures when scanning `line`.
    pub sample: fn(&mut fastrand::Rng) -> (String, String),
}

/// All built-in rules (at least 30), compiled once per call (the caller caches).
pub fn builtin() -> Vec<Rule> {
    use Severity::{Critical, High, Low, Medium};
    vec![
        // ---- Cloud providers -------------------------------------------------
        rule(
            "aws-access-key-id",
            "AWS access key id (long-term AKIA or temporary ASIA)",
            High,
            &["AKIA", "ASIA"],
            r"\b(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{16})\b",
            Some(aws_key_id_ok),
            sample_aws_key_id,
        ),
        rule(
            "aws-secret-access-key",
            "AWS secret access key assigned to an AWS secret key setting",
            Critical,
            &["aws_secret", "AWS_SECRET", "ecretAccessKey"],
            &assignment(
                r"aws_secret_access_key|aws_secret_key|AWS_SECRET_ACCESS_KEY|AWS_SECRET_KEY|[sS]ecretAccessKey",
                r"[A-Za-z0-9/+]{40}",
                r"(?:[^A-Za-z0-9/+=]|$)",
            ),
            Some(aws_secret_ok),
            sample_aws_secret,
        ),
        rule(
            "gcp-api-key",
            "Google Cloud / Firebase API key",
            High,
            &["AIza"],
            r"\b(?P<secret>AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
            Some(varied),
            sample_gcp_api_key,
        ),
        rule(
            "gcp-service-account-key-id",
            "Google Cloud service-account key file (private_key_id)",
            Medium,
            &["private_key_id"],
            r#""private_key_id"\s*:\s*"(?P<secret>[0-9a-f]{40})""#,
            Some(varied),
            sample_gcp_key_id,
        ),
        rule(
            "azure-storage-account-key",
            "Azure storage account key in a connection string",
            Critical,
            &["AccountKey="],
            r"AccountKey=(?P<secret>[A-Za-z0-9+/]{86}==)",
            Some(azure_key_ok),
            sample_azure_storage_key,
        ),
        rule(
            "azure-ad-client-secret",
            "Azure AD (Entra ID) application client secret",
            High,
            &["Q~"],
            r#"(?:^|[\s'"`=:(,>])(?P<secret>[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})(?:$|[\s'"`<),;])"#,
            Some(varied),
            sample_azure_ad_secret,
        ),
        rule(
            "digitalocean-token",
            "DigitalOcean personal access, OAuth or refresh token",
            Critical,
            &["dop_v1_", "doo_v1_", "dor_v1_"],
            r"\b(?P<secret>do[opr]_v1_[a-f0-9]{64})\b",
            Some(varied),
            sample_digitalocean,
        ),
        rule(
            "heroku-api-key",
            "Heroku API key (UUID) assigned to a Heroku key/token setting",
            High,
            &["heroku", "HEROKU", "Heroku"],
            &keyed(
                "heroku|HEROKU|Heroku",
                r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                r"\b",
            ),
            Some(varied),
            sample_heroku,
        ),
        rule(
            "heroku-api-key-v2",
            "Heroku API key (HRKU- format)",
            High,
            &["HRKU-AA"],
            r"\b(?P<secret>HRKU-AA[0-9A-Za-z_-]{58})(?:[^0-9A-Za-z_-]|$)",
            Some(varied),
            sample_heroku_v2,
        ),
        rule(
            "alibaba-access-key-id",
            "Alibaba Cloud AccessKey id",
            High,
            &["LTAI"],
            r"\b(?P<secret>LTAI[A-Za-z0-9]{12,20})\b",
            Some(varied),
            sample_alibaba,
        ),
        // ---- Source hosting and package registries ---------------------------
        rule(
            "github-token",
            "GitHub token (personal, OAuth, user-to-server, server-to-server or refresh) with a valid checksum",
            Critical,
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
            r"\b(?P<secret>gh[pousr]_[A-Za-z0-9]{36})\b",
            Some(crc32_token_ok),
            sample_github_token,
        ),
        rule(
            "github-fine-grained-pat",
            "GitHub fine-grained personal access token",
            Critical,
            &["github_pat_"],
            r"\b(?P<secret>github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b",
            Some(varied),
            sample_github_fine_grained,
        ),
        rule(
            "gitlab-pat",
            "GitLab personal access token",
            Critical,
            &["glpat-"],
            r"\b(?P<secret>glpat-[A-Za-z0-9_-]{20,})",
            Some(varied),
            sample_gitlab_pat,
        ),
        rule(
            "gitlab-runner-token",
            "GitLab runner authentication token",
            High,
            &["glrt-"],
            r"\b(?P<secret>glrt-[A-Za-z0-9_-]{20,})",
            Some(varied),
            sample_gitlab_runner,
        ),
        rule(
            "bitbucket-app-password",
            "Bitbucket app password assigned to a Bitbucket password/token setting",
            High,
            &["bitbucket", "BITBUCKET", "Bitbucket", "BitBucket"],
            &keyed(
                "bitbucket|BITBUCKET|Bitbucket|BitBucket",
                r"ATBB[A-Za-z0-9_=.-]{20,100}|[A-Za-z0-9]{20}",
                r"(?:[^A-Za-z0-9_=.-]|$)",
            ),
            Some(varied),
            sample_bitbucket,
        ),
        rule(
            "npm-token",
            "npm access token with a valid checksum",
            Critical,
            &["npm_"],
            r"\b(?P<secret>npm_[A-Za-z0-9]{36})\b",
            Some(crc32_token_ok),
            sample_npm,
        ),
        rule(
            "pypi-token",
            "PyPI upload token",
            Critical,
            &["pypi-AgEIcHlwaS5vcmc"],
            r"\b(?P<secret>pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})",
            Some(varied),
            sample_pypi,
        ),
        // ---- Chat --------------------------------------------------------------
        rule(
            "slack-bot-token",
            "Slack bot token",
            High,
            &["xoxb-"],
            r"\b(?P<secret>xoxb-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24})\b",
            Some(varied),
            sample_slack_bot,
        ),
        rule(
            "slack-user-token",
            "Slack user, workspace-app or refresh token",
            High,
            &["xoxp-", "xoxa-", "xoxr-"],
            r"\b(?P<secret>xox[par]-(?:[0-9]{1,2}-)?[0-9]{10,13}-[0-9]{10,13}(?:-[0-9]{10,13})?-[A-Za-z0-9]{24,64})\b",
            Some(varied),
            sample_slack_user,
        ),
        rule(
            "slack-app-token",
            "Slack app-level token",
            High,
            &["xapp-"],
            r"\b(?P<secret>xapp-[0-9]-[A-Z0-9]{9,11}-[0-9]{10,13}-[a-f0-9]{64})\b",
            Some(varied),
            sample_slack_app,
        ),
        rule(
            "slack-webhook-url",
            "Slack incoming-webhook URL",
            High,
            &["hooks.slack.com/services/"],
            r"(?P<secret>https://hooks\.slack\.com/services/T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24})\b",
            Some(slack_webhook_ok),
            sample_slack_webhook,
        ),
        rule(
            "discord-bot-token",
            "Discord bot token on a line that mentions Discord",
            High,
            &["discord", "Discord", "DISCORD"],
            r"(?:discord|Discord|DISCORD).{0,80}?\b(?P<secret>[MNO][A-Za-z0-9_-]{22,26}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38})(?:[^A-Za-z0-9_-]|$)",
            Some(discord_ok),
            sample_discord,
        ),
        rule(
            "telegram-bot-token",
            "Telegram bot token",
            High,
            &[":A"],
            r"\b(?:bot)?(?P<secret>[0-9]{5,16}:A[A-Za-z0-9_-]{33,34})(?:[^A-Za-z0-9_-]|$)",
            Some(telegram_ok),
            sample_telegram,
        ),
        // ---- Payments and mail ------------------------------------------------
        rule(
            "stripe-secret-key",
            "Stripe live secret or restricted key",
            Critical,
            &["sk_live_", "rk_live_"],
            r"\b(?P<secret>[sr]k_live_[A-Za-z0-9]{24,99})\b",
            Some(varied),
            sample_stripe_live,
        ),
        rule(
            "stripe-test-key",
            "Stripe test-mode secret or restricted key",
            Low,
            &["sk_test_", "rk_test_"],
            r"\b(?P<secret>[sr]k_test_[A-Za-z0-9]{24,99})\b",
            Some(varied),
            sample_stripe_test,
        ),
        rule(
            "square-access-token",
            "Square access token",
            Critical,
            &["EAAA", "sq0atp-"],
            r"\b(?P<secret>EAAA[A-Za-z0-9_-]{60}|sq0atp-[A-Za-z0-9_-]{22})(?:[^A-Za-z0-9_-]|$)",
            Some(varied),
            sample_square,
        ),
        rule(
            "twilio-api-key",
            "Twilio API key SID",
            High,
            &["SK"],
            r"\b(?P<secret>SK[0-9a-f]{32})\b",
            Some(varied),
            sample_twilio,
        ),
        rule(
            "sendgrid-api-key",
            "SendGrid API key",
            High,
            &["SG."],
            r"\b(?P<secret>SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)",
            Some(varied),
            sample_sendgrid,
        ),
        rule(
            "mailgun-api-key",
            "Mailgun private API key",
            High,
            &["key-"],
            r"\b(?P<secret>key-[0-9a-f]{32})\b",
            Some(varied),
            sample_mailgun,
        ),
        rule(
            "mailchimp-api-key",
            "Mailchimp API key",
            High,
            &["-us"],
            r"\b(?P<secret>[0-9a-f]{32}-us[0-9]{1,2})\b",
            Some(varied),
            sample_mailchimp,
        ),
        rule(
            "shopify-token",
            "Shopify access token, shared secret, custom-app or private-app token",
            High,
            &["shpat_", "shpss_", "shpca_", "shppa_"],
            r"\b(?P<secret>shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32})\b",
            Some(varied),
            sample_shopify,
        ),
        // ---- Keys, tokens and credentials -------------------------------------
        rule(
            "private-key",
            "PEM / OpenSSH / PGP private key block (the secret is its first base64 line)",
            Critical,
            &["PRIVATE KEY"],
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----[ \t]*(?:\r?\n|\\r\\n|\\n)(?:[ \t]*[A-Za-z][A-Za-z-]*: [^\r\n\\]*(?:\r?\n|\\r\\n|\\n))*(?:[ \t]*(?:\r?\n|\\r\\n|\\n))?[ \t]*(?P<secret>[A-Za-z0-9+/]{32,}={0,2})",
            Some(pem_line_ok),
            sample_private_key,
        ),
        rule(
            "jwt",
            "JSON Web Token (header with alg and payload decode to JSON objects)",
            Medium,
            &["eyJ"],
            r"\b(?P<secret>eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,})",
            Some(jwt_ok),
            sample_jwt,
        ),
        rule(
            "connection-string-password",
            "Password in a database or broker connection URL",
            High,
            &["postgres", "mysql", "mariadb", "mongodb", "redis", "amqp"],
            r#"\b(?:postgres(?:ql)?|mysql|mariadb|mongodb|rediss?|amqps?)(?:\+[a-z0-9]+)?://[^\s:/@'"`]*:(?P<secret>[^\s/@'"`]+)@[A-Za-z0-9\[/%]"#,
            Some(connection_password_ok),
            sample_connection_string,
        ),
        rule(
            "openai-api-key",
            "OpenAI API key (legacy, project, service-account or admin)",
            Critical,
            &["T3BlbkFJ"],
            r"\b(?P<secret>sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,100}T3BlbkFJ[A-Za-z0-9_-]{20,100})(?:[^A-Za-z0-9_-]|$)",
            Some(varied),
            sample_openai,
        ),
        rule(
            "anthropic-api-key",
            "Anthropic API or admin key",
            Critical,
            &["sk-ant-"],
            r"\b(?P<secret>sk-ant-(?:api03|admin01)-[A-Za-z0-9_-]{93}AA)(?:[^A-Za-z0-9_-]|$)",
            Some(varied),
            sample_anthropic,
        ),
        rule(
            "vault-token",
            "HashiCorp Vault service or batch token",
            Critical,
            &["hvs.", "hvb."],
            r"\b(?P<secret>hv[sb]\.[A-Za-z0-9_-]{90,})",
            Some(varied),
            sample_vault,
        ),
        rule(
            "databricks-token",
            "Databricks personal access token",
            High,
            &["dapi"],
            r"\b(?P<secret>dapi[0-9a-f]{32}(?:-[0-9]+)?)\b",
            Some(varied),
            sample_databricks,
        ),
        rule(
            "huggingface-token",
            "Hugging Face access token",
            High,
            &["hf_"],
            r"\b(?P<secret>hf_[A-Za-z]{34})\b",
            Some(varied),
            sample_huggingface,
        ),
        rule(
            "atlassian-api-token",
            "Atlassian (Jira, Confluence) API token",
            High,
            &["ATATT3"],
            r"\b(?P<secret>ATATT3[A-Za-z0-9_=-]{186})(?:[^A-Za-z0-9_=-]|$)",
            Some(varied),
            sample_atlassian,
        ),
        rule(
            "google-oauth-client-secret",
            "Google OAuth client secret",
            High,
            &["GOCSPX-"],
            r"\b(?P<secret>GOCSPX-[A-Za-z0-9_-]{28})(?:[^A-Za-z0-9_-]|$)",
            Some(varied),
            sample_google_oauth,
        ),
        rule(
            "okta-api-token",
            "Okta API token assigned to an Okta key/token setting",
            High,
            &["okta", "OKTA", "Okta"],
            &keyed("okta|OKTA|Okta", r"00[A-Za-z0-9_-]{40}", r"(?:[^A-Za-z0-9_-]|$)"),
            Some(varied),
            sample_okta,
        ),
        rule(
            "age-secret-key",
            "age encryption secret key with a valid bech32 checksum",
            Critical,
            &["AGE-SECRET-KEY-1"],
            r"\b(?P<secret>AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})\b",
            Some(bech32_ok),
            sample_age,
        ),
        rule(
            "doppler-token",
            "Doppler personal token",
            High,
            &["dp.pt."],
            r"\b(?P<secret>dp\.pt\.[A-Za-z0-9]{43})\b",
            Some(varied),
            sample_doppler,
        ),
        rule(
            "linear-api-key",
            "Linear API key",
            High,
            &["lin_api_"],
            r"\b(?P<secret>lin_api_[A-Za-z0-9]{40})\b",
            Some(varied),
            sample_linear,
        ),
        rule(
            "postman-api-key",
            "Postman API key",
            High,
            &["PMAK-"],
            r"\b(?P<secret>PMAK-[a-f0-9]{24}-[a-f0-9]{34})\b",
            Some(varied),
            sample_postman,
        ),
    ]
}

// ---- Building rules ----------------------------------------------------------

fn rule(
    id: &'static str,
    description: &'static str,
    severity: Severity,
    keywords: &'static [&'static str],
    pattern: &str,
    check: Option<Check>,
    sample: fn(&mut Rng) -> (String, String),
) -> Rule {
    Rule {
        id,
        description,
        severity,
        keywords,
        pattern: compile(pattern),
        check,
        sample,
    }
}

/// Compiles a built-in (constant) pattern; `\b` is taken as an ASCII word
/// boundary.
#[allow(
    clippy::expect_used,
    reason = "built-in patterns are constants, and the tests compile every one"
)]
fn compile(pattern: &str) -> Regex {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).expect("built-in pattern")
}

/// Words that make a key name a credential's name.
const SECRET_WORD: &str =
    "(?:key|KEY|Key|token|TOKEN|Token|secret|SECRET|Secret|pass|PASS|Pass|pwd|PWD)";

/// `key = value` in the usual syntaxes (env files, YAML, JSON, TOML, code:
/// `=`, `:`, `=>`, `:=`, quoted or not): one of the names in `key` (a regex
/// alternation, taken case-sensitively), up to 20 more key characters, the
/// operator, then `value` as the `secret` group followed by `end`.
fn assignment(key: &str, value: &str, end: &str) -> String {
    format!(
        r#"(?:{key})[A-Za-z0-9_.-]{{0,20}}["']?\s{{0,4}}(?:=>|:=|=|:)\s{{0,4}}["'`]?(?P<secret>{value}){end}"#
    )
}

/// An assignment whose key names the service (`service`, a regex
/// alternation) and then a credential word: `HEROKU_API_KEY=...`,
/// `okta.apiToken: ...`.
fn keyed(service: &str, value: &str, end: &str) -> String {
    assignment(
        &format!("(?:{service})[A-Za-z0-9_.-]{{0,20}}{SECRET_WORD}"),
        value,
        end,
    )
}

// ---- Checks ------------------------------------------------------------------

/// Whether a token looks generated rather than typed: at least 3 bits of
/// Shannon entropy per character, at least two of upper-case letters,
/// lower-case letters and digits, and no run like "123456" or "abcdef".
/// Rejects placeholders such as `sk_live_XXXXXXXXXXXXXXXXXXXXXXXX`.
fn varied(token: &str) -> bool {
    let bytes = token.as_bytes();
    if bytes.len() < 8 {
        return false;
    }
    let mut counts = [0usize; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let len = bytes.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / len;
            -p * p.log2()
        })
        .sum();
    let classes = usize::from(bytes.iter().any(u8::is_ascii_uppercase))
        + usize::from(bytes.iter().any(u8::is_ascii_lowercase))
        + usize::from(bytes.iter().any(u8::is_ascii_digit));
    entropy >= 3.0 && classes >= 2 && !has_run(bytes)
}

/// Six consecutive ascending or descending characters ("123456", "fedcba").
fn has_run(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| {
        w.windows(2).all(|p| p[1] == p[0].wrapping_add(1))
            || w.windows(2).all(|p| p[0] == p[1].wrapping_add(1))
    })
}

/// How many different bytes `s` holds.
fn distinct(s: &str) -> usize {
    let mut seen = [false; 256];
    let mut n = 0;
    for &b in s.as_bytes() {
        if !seen[usize::from(b)] {
            seen[usize::from(b)] = true;
            n += 1;
        }
    }
    n
}

/// Not AWS's documentation key, and a random-looking body in AWS's
/// alphabet: base32, upper-case letters and the digits 2-7 (the pattern
/// takes any digit, so a made-up key with a 0, 1, 8 or 9 reaches this check
/// and can be reported as unverified). `varied`'s class test does not fit.
fn aws_key_id_ok(id: &str) -> bool {
    !id.ends_with("EXAMPLE")
        && id.get(4..).is_some_and(|body| {
            body.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
                && distinct(body) >= 6
                && !has_run(body.as_bytes())
        })
}

/// Not AWS's documentation secret, and random-looking.
fn aws_secret_ok(secret: &str) -> bool {
    !secret.contains("EXAMPLE") && varied(secret)
}

/// An Azure storage key is 64 bytes, base64 with canonical padding.
fn azure_key_ok(key: &str) -> bool {
    STANDARD.decode(key).is_ok_and(|bytes| bytes.len() == 64)
}

/// Base62 alphabet of GitHub's and npm's token checksums (also used to make tokens).
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The CRC32 of `body`, base62-encoded (alphabet 0-9A-Za-z), left-padded
/// with '0' to 6 characters: the last 6 characters of a GitHub or npm token.
fn base62_crc32(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// `prefix_` + 30 random characters + the base62 CRC32 of those 30.
fn crc32_token_ok(token: &str) -> bool {
    let Some((_, rest)) = token.split_once('_') else {
        return false;
    };
    if rest.len() != 36 || !rest.is_ascii() {
        return false;
    }
    let (body, checksum) = rest.split_at(30);
    base62_crc32(body) == checksum
}

/// `<bot id>:<key>`: an id without a leading zero and a random-looking key.
fn telegram_ok(token: &str) -> bool {
    token
        .split_once(':')
        .is_some_and(|(id, key)| !id.starts_with('0') && varied(key))
}

/// The webhook's last path segment (its secret part) is random-looking.
fn slack_webhook_ok(url: &str) -> bool {
    url.rsplit('/').next().is_some_and(varied)
}

/// base64url, padding optional, non-canonical trailing bits tolerated: how
/// JWT and Discord token parts are decoded.
const BASE64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The first part of a Discord bot token is the bot's numeric id (a
/// snowflake, 17-20 digits) in base64.
fn discord_ok(token: &str) -> bool {
    let Some((id, _)) = token.split_once('.') else {
        return false;
    };
    let Ok(id) = BASE64URL_LENIENT.decode(id) else {
        return false;
    };
    (17..=20).contains(&id.len()) && id[0] != b'0' && id.iter().all(u8::is_ascii_digit)
}

/// A base64url JSON object.
fn json_object(part: &str) -> Option<serde_json::Map<String, Value>> {
    let bytes = BASE64URL_LENIENT.decode(part).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// header.payload.signature, where the header is a JSON object with a string
/// `alg` and the payload a JSON object.
fn jwt_ok(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(header) = json_object(header) else {
        return false;
    };
    header.get("alg").is_some_and(Value::is_string)
        && json_object(payload).is_some()
        && !signature.is_empty()
}

/// Passwords that documentation, examples and local defaults use.
const PLACEHOLDER_PASSWORDS: &[&str] = &[
    "pass",
    "pwd",
    "pw",
    "secret",
    "changeit",
    "example",
    "test",
    "testing",
    "dummy",
    "placeholder",
    "redacted",
    "admin",
    "root",
    "guest",
    "user",
    "username",
    "postgres",
    "mysql",
    "mongo",
    "mongodb",
    "redis",
    "rabbitmq",
    "default",
    "none",
    "null",
    "empty",
    "foo",
    "bar",
    "foobar",
    "123456",
    "12345678",
    "qwerty",
    "letmein",
];

/// Substrings that mark a password as a placeholder.
const PLACEHOLDER_MARKS: &[&str] = &[
    "password",
    "passwd",
    "changeme",
    "change_me",
    "xxx",
    "***",
    "...",
    "your_",
    "your-",
];

/// A connection-string password that is not a placeholder: not a default
/// or documentation password, not a template (`${VAR}`, `$VAR`, `%s`,
/// `{{ var }}`, `<password>`, `[password]`), not masked (`****`, `xxx`).
fn connection_password_ok(password: &str) -> bool {
    let lower = password.to_ascii_lowercase();
    let templated =
        password.starts_with(['$', '%']) || password.contains(['{', '}', '<', '>', '[', ']']);
    let repeated = password
        .chars()
        .next()
        .is_some_and(|first| password.chars().all(|c| c == first));
    let placeholder = PLACEHOLDER_PASSWORDS.contains(&lower.as_str())
        || PLACEHOLDER_MARKS.iter().any(|mark| lower.contains(mark));
    password.len() >= 3 && !templated && !repeated && !placeholder
}

/// The first base64 line of a private key: not a run of one character or of
/// a placeholder alphabet. (Real lines can hold long runs of 'A' — OpenSSH
/// keys do — so the entropy test of `varied` does not fit.)
fn pem_line_ok(line: &str) -> bool {
    distinct(line) >= 10 && !has_run(line.as_bytes())
}

/// The bech32 character set, values 0-31 in order.
const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// BIP-173 checksum state over 5-bit values.
fn bech32_polymod(values: &[u8]) -> u32 {
    const GENERATOR: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut checksum: u32 = 1;
    for &value in values {
        let top = checksum >> 25;
        checksum = ((checksum & 0x01ff_ffff) << 5) ^ u32::from(value);
        for (i, generator) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                checksum ^= generator;
            }
        }
    }
    checksum
}

/// The human-readable part expanded for the checksum.
fn bech32_hrp_expand(hrp: &str) -> Vec<u8> {
    hrp.bytes()
        .map(|c| c >> 5)
        .chain(std::iter::once(0))
        .chain(hrp.bytes().map(|c| c & 31))
        .collect()
}

/// A bech32 string (either case) whose checksum is valid.
fn bech32_ok(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let Some((hrp, data)) = lower.rsplit_once('1') else {
        return false;
    };
    if hrp.is_empty() || data.len() < 6 {
        return false;
    }
    let mut values = bech32_hrp_expand(hrp);
    for c in data.bytes() {
        match BECH32.iter().position(|&b| b == c) {
            Some(value) => values.push(value as u8),
            None => return false,
        }
    }
    bech32_polymod(&values) == 1
}

// ---- Samples -----------------------------------------------------------------

const DIGITS: &[u8] = b"0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const UPPER_HEX: &[u8] = b"0123456789ABCDEF";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = BASE62;
const UPPER_ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const AZURE_SECRET_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~.-";
const PASSWORD_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!";

/// `len` characters drawn from `set`.
fn random(rng: &mut Rng, set: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(set[rng.usize(..set.len())]))
        .collect()
}

/// A `len`-digit decimal number without a leading zero.
fn number(rng: &mut Rng, len: usize) -> String {
    let mut out = String::with_capacity(len);
    out.push(char::from(b'1' + rng.u8(..9)));
    out.push_str(&random(rng, DIGITS, len.saturating_sub(1)));
    out
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

fn pick<'a>(rng: &mut Rng, options: &[&'a str]) -> &'a str {
    options[rng.usize(..options.len())]
}

/// A secret made by `make` that passes `check` (tries again the rare
/// generated value that looks like a placeholder).
fn valid(rng: &mut Rng, check: Check, make: impl Fn(&mut Rng) -> String) -> String {
    let mut secret = make(rng);
    for _ in 0..1000 {
        if check(&secret) {
            break;
        }
        secret = make(rng);
    }
    secret
}

/// One of `templates` with `{s}` replaced by the secret.
fn embed(rng: &mut Rng, templates: &[&str], secret: String) -> (String, String) {
    (pick(rng, templates).replace("{s}", &secret), secret)
}

fn sample_aws_key_id(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, aws_key_id_ok, |rng| {
        format!(
            "{}{}",
            pick(rng, &["AKIA", "ASIA"]),
            random(rng, BASE32, 16)
        )
    });
    embed(
        rng,
        &[
            "aws_access_key_id = {s}",
            "AWS_ACCESS_KEY_ID=\"{s}\"",
            r#"    "AccessKeyId": "{s}","#,
        ],
        secret,
    )
}

fn sample_aws_secret(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, aws_secret_ok, |rng| random(rng, BASE64, 40));
    embed(
        rng,
        &[
            "aws_secret_access_key = {s}",
            "export AWS_SECRET_ACCESS_KEY=\"{s}\"",
            r#"    "SecretAccessKey": "{s}","#,
            "  awsSecretAccessKey: '{s}'",
        ],
        secret,
    )
}

fn sample_gcp_api_key(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("AIzaSy{}", random(rng, BASE64URL, 33))
    });
    embed(
        rng,
        &[
            "  apiKey: \"{s}\",",
            "GOOGLE_API_KEY={s}",
            "maps_key = '{s}'",
        ],
        secret,
    )
}

fn sample_gcp_key_id(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| random(rng, HEX, 40));
    embed(
        rng,
        &[
            r#"  "private_key_id": "{s}","#,
            r#"{"type": "service_account", "private_key_id": "{s}"}"#,
        ],
        secret,
    )
}

fn sample_azure_storage_key(rng: &mut Rng) -> (String, String) {
    let secret = STANDARD.encode(bytes(rng, 64));
    let account = format!(
        "{}{}",
        pick(rng, &["prod", "media", "logs", "backup"]),
        random(rng, LOWER_ALNUM, 6)
    );
    let line = format!(
        "{}DefaultEndpointsProtocol=https;AccountName={account};AccountKey={secret};EndpointSuffix=core.windows.net{}",
        pick(rng, &["AZURE_STORAGE_CONNECTION_STRING=\"", "  \"AzureWebJobsStorage\": \""]),
        pick(rng, &["\"", "\","]),
    );
    (line, secret)
}

fn sample_azure_ad_secret(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "{}{}Q~{}",
            random(rng, ALNUM, 3),
            random(rng, DIGITS, 1),
            random(rng, AZURE_SECRET_CHARS, 34)
        )
    });
    embed(
        rng,
        &[
            "AZURE_CLIENT_SECRET=\"{s}\"",
            "  client_secret: {s}",
            r#"  "ClientSecret": "{s}","#,
        ],
        secret,
    )
}

fn sample_digitalocean(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "{}{}",
            pick(rng, &["dop_v1_", "doo_v1_", "dor_v1_"]),
            random(rng, HEX, 64)
        )
    });
    embed(
        rng,
        &[
            "DIGITALOCEAN_TOKEN={s}",
            "  token: \"{s}\"",
            "export DO_API_TOKEN='{s}'",
        ],
        secret,
    )
}

fn sample_heroku(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "{}-{}-4{}-{}{}-{}",
            random(rng, HEX, 8),
            random(rng, HEX, 4),
            random(rng, HEX, 3),
            pick(rng, &["8", "9", "a", "b"]),
            random(rng, HEX, 3),
            random(rng, HEX, 12)
        )
    });
    embed(
        rng,
        &[
            "HEROKU_API_KEY={s}",
            "heroku_api_key: \"{s}\"",
            "Heroku.api_key = '{s}'",
        ],
        secret,
    )
}

fn sample_heroku_v2(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("HRKU-AA{}", random(rng, BASE64URL, 58))
    });
    embed(rng, &["HEROKU_API_KEY={s}", "  api_key: \"{s}\""], secret)
}

fn sample_alibaba(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("LTAI5t{}", random(rng, ALNUM, 18))
    });
    embed(
        rng,
        &[
            "ALIBABA_CLOUD_ACCESS_KEY_ID={s}",
            "  accessKeyId: '{s}',",
            "access_key_id = \"{s}\"",
        ],
        secret,
    )
}

/// `prefix` + 30 random characters + their base62 CRC32.
fn checksummed_token(rng: &mut Rng, prefix: &str) -> String {
    let body = random(rng, ALNUM, 30);
    let checksum = base62_crc32(&body);
    format!("{prefix}{body}{checksum}")
}

fn sample_github_token(rng: &mut Rng) -> (String, String) {
    let prefix = pick(rng, &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]);
    let secret = checksummed_token(rng, prefix);
    embed(
        rng,
        &[
            "GITHUB_TOKEN={s}",
            "git clone https://x-access-token:{s}@github.com/acme/api.git",
            r#"  "token": "{s}","#,
            "Authorization: token {s}",
        ],
        secret,
    )
}

fn sample_github_fine_grained(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "github_pat_{}_{}",
            random(rng, ALNUM, 22),
            random(rng, ALNUM, 59)
        )
    });
    embed(rng, &["GH_TOKEN={s}", "  github_token: \"{s}\""], secret)
}

fn sample_gitlab_pat(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("glpat-{}", random(rng, BASE64URL, 20))
    });
    embed(
        rng,
        &[
            "GITLAB_TOKEN={s}",
            "private_token: \"{s}\"",
            "curl --header \"PRIVATE-TOKEN: {s}\" https://gitlab.example.com/api/v4/projects",
        ],
        secret,
    )
}

fn sample_gitlab_runner(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("glrt-{}", random(rng, BASE64URL, 20))
    });
    embed(rng, &["  token = \"{s}\"", "RUNNER_TOKEN={s}"], secret)
}

fn sample_bitbucket(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        if rng.bool() {
            random(rng, ALNUM, 20)
        } else {
            format!("ATBB{}", random(rng, ALNUM, 32))
        }
    });
    embed(
        rng,
        &[
            "BITBUCKET_APP_PASSWORD={s}",
            "bitbucket_token: \"{s}\"",
            "Bitbucket.password = '{s}'",
        ],
        secret,
    )
}

fn sample_npm(rng: &mut Rng) -> (String, String) {
    let secret = checksummed_token(rng, "npm_");
    embed(
        rng,
        &[
            "//registry.npmjs.org/:_authToken={s}",
            "NPM_TOKEN={s}",
            "  npmAuthToken: \"{s}\"",
        ],
        secret,
    )
}

fn sample_pypi(rng: &mut Rng) -> (String, String) {
    let len = rng.usize(60..=120);
    let body = URL_SAFE_NO_PAD.encode(bytes(rng, len));
    let secret = format!("pypi-AgEIcHlwaS5vcmc{body}");
    embed(
        rng,
        &[
            "password = {s}",
            "TWINE_PASSWORD=\"{s}\"",
            "  pypi_token: {s}",
        ],
        secret,
    )
}

fn sample_slack_bot(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        let (a, b) = (rng.usize(10..=13), rng.usize(10..=13));
        format!(
            "xoxb-{}-{}-{}",
            number(rng, a),
            number(rng, b),
            random(rng, ALNUM, 24)
        )
    });
    embed(
        rng,
        &[
            "SLACK_BOT_TOKEN={s}",
            "  slack_token: \"{s}\"",
            "client = WebClient(token=\"{s}\")",
        ],
        secret,
    )
}

fn sample_slack_user(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        let (a, b, c) = (rng.usize(10..=13), rng.usize(10..=13), rng.usize(10..=13));
        if rng.bool() {
            format!(
                "xoxp-{}-{}-{}-{}",
                number(rng, a),
                number(rng, b),
                number(rng, c),
                random(rng, HEX, 32)
            )
        } else {
            let kind = pick(rng, &["xoxa", "xoxr"]);
            format!(
                "{kind}-2-{}-{}-{}",
                number(rng, a),
                number(rng, b),
                random(rng, ALNUM, 32)
            )
        }
    });
    embed(rng, &["SLACK_USER_TOKEN={s}", "  token: '{s}'"], secret)
}

fn sample_slack_app(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        let len = rng.usize(10..=13);
        format!(
            "xapp-1-A{}-{}-{}",
            random(rng, UPPER_ALNUM, 10),
            number(rng, len),
            random(rng, HEX, 64)
        )
    });
    embed(
        rng,
        &["SLACK_APP_TOKEN={s}", "  app_token: \"{s}\""],
        secret,
    )
}

fn sample_slack_webhook(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, slack_webhook_ok, |rng| {
        format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            random(rng, UPPER_ALNUM, 10),
            random(rng, UPPER_ALNUM, 10),
            random(rng, ALNUM, 24)
        )
    });
    embed(
        rng,
        &[
            "SLACK_WEBHOOK_URL={s}",
            "  webhook: \"{s}\"",
            "curl -X POST -d @payload.json {s}",
        ],
        secret,
    )
}

fn sample_discord(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, discord_ok, |rng| {
        let digits = rng.usize(17..=19);
        let id = number(rng, digits);
        let stamp = bytes(rng, 4);
        let mac_len = if rng.bool() { 20 } else { 28 };
        let mac = bytes(rng, mac_len);
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(id),
            URL_SAFE_NO_PAD.encode(stamp),
            URL_SAFE_NO_PAD.encode(mac)
        )
    });
    embed(
        rng,
        &[
            "DISCORD_BOT_TOKEN={s}",
            "discord_token = \"{s}\"",
            "  \"discord\": {\"token\": \"{s}\"},",
        ],
        secret,
    )
}

fn sample_telegram(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, telegram_ok, |rng| {
        let digits = rng.usize(8..=10);
        format!("{}:AA{}", number(rng, digits), random(rng, BASE64URL, 33))
    });
    embed(
        rng,
        &[
            "TELEGRAM_BOT_TOKEN={s}",
            "requests.get(\"https://api.telegram.org/bot{s}/getMe\")",
            "  bot_token: \"{s}\"",
        ],
        secret,
    )
}

fn sample_stripe(rng: &mut Rng, mode: &str) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        let len = rng.usize(24..=99);
        format!(
            "{}k_{mode}_{}",
            pick(rng, &["s", "r"]),
            random(rng, ALNUM, len)
        )
    });
    embed(
        rng,
        &[
            "STRIPE_SECRET_KEY={s}",
            "stripe.api_key = \"{s}\"",
            "\\Stripe\\Stripe::setApiKey('{s}');",
        ],
        secret,
    )
}

fn sample_stripe_live(rng: &mut Rng) -> (String, String) {
    sample_stripe(rng, "live")
}

fn sample_stripe_test(rng: &mut Rng) -> (String, String) {
    sample_stripe(rng, "test")
}

fn sample_square(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        if rng.bool() {
            format!("EAAA{}", random(rng, BASE64URL, 60))
        } else {
            format!("sq0atp-{}", random(rng, BASE64URL, 22))
        }
    });
    embed(
        rng,
        &["SQUARE_ACCESS_TOKEN={s}", "  accessToken: '{s}',"],
        secret,
    )
}

fn sample_twilio(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| format!("SK{}", random(rng, HEX, 32)));
    embed(
        rng,
        &["TWILIO_API_KEY={s}", "api_key_sid = \"{s}\""],
        secret,
    )
}

fn sample_sendgrid(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "SG.{}.{}",
            random(rng, BASE64URL, 22),
            random(rng, BASE64URL, 43)
        )
    });
    embed(
        rng,
        &["SENDGRID_API_KEY={s}", "sg = SendGridAPIClient('{s}')"],
        secret,
    )
}

fn sample_mailgun(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| format!("key-{}", random(rng, HEX, 32)));
    embed(
        rng,
        &["MAILGUN_API_KEY={s}", "auth=(\"api\", \"{s}\")"],
        secret,
    )
}

fn sample_mailchimp(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        let dc = rng.usize(1..=21);
        format!("{}-us{dc}", random(rng, HEX, 32))
    });
    embed(
        rng,
        &["MAILCHIMP_API_KEY={s}", "  apiKey: \"{s}\","],
        secret,
    )
}

fn sample_shopify(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "{}{}",
            pick(rng, &["shpat_", "shpss_", "shpca_", "shppa_"]),
            random(rng, HEX, 32)
        )
    });
    embed(
        rng,
        &[
            "SHOPIFY_ACCESS_TOKEN={s}",
            r#"  "X-Shopify-Access-Token": "{s}","#,
        ],
        secret,
    )
}

fn sample_private_key(rng: &mut Rng) -> (String, String) {
    let kind = pick(rng, &["", "RSA ", "EC ", "OPENSSH "]);
    let first = valid(rng, pem_line_ok, |rng| {
        // A DER SEQUENCE header as real keys start with, then random bytes.
        let mut der = bytes(rng, 48);
        der[..4].copy_from_slice(&[0x30, 0x82, 0x04, 0xa4]);
        STANDARD.encode(der)
    });
    let second = STANDARD.encode(bytes(rng, 48));
    // The single-line JSON form (a service-account key file); the multi-line
    // PEM form is covered by the tests.
    let line = format!(
        r#"  "private_key": "-----BEGIN {kind}PRIVATE KEY-----\n{first}\n{second}\n-----END {kind}PRIVATE KEY-----\n","#
    );
    (line, first)
}

fn sample_jwt(rng: &mut Rng) -> (String, String) {
    let alg = pick(rng, &["HS256", "HS512", "RS256", "ES256"]);
    let header = if rng.bool() {
        format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)
    } else {
        format!(r#"{{"kid":"{}","alg":"{alg}"}}"#, random(rng, HEX, 16))
    };
    let iat = 1_600_000_000 + u64::from(rng.u32(..100_000_000));
    let payload = if rng.bool() {
        format!(
            r#"{{"sub":"{}","name":"{}","iat":{iat}}}"#,
            number(rng, 10),
            pick(rng, &["Ada Lovelace", "Alan Turing", "Grace Hopper"])
        )
    } else {
        format!(
            r#"{{"iss":"https://auth.example.com/","sub":"user-{}","exp":{},"scope":"read write"}}"#,
            random(rng, LOWER_ALNUM, 8),
            iat + 3600
        )
    };
    let signature_len = if alg == "RS256" { 256 } else { 32 };
    let signature = bytes(rng, signature_len);
    let secret = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    );
    embed(
        rng,
        &[
            "Authorization: Bearer {s}",
            "const token = \"{s}\";",
            "  id_token: {s}",
        ],
        secret,
    )
}

fn sample_connection_string(rng: &mut Rng) -> (String, String) {
    let password = valid(rng, connection_password_ok, |rng| {
        let len = rng.usize(12..=24);
        random(rng, PASSWORD_CHARS, len)
    });
    let (scheme, port) = match rng.usize(..6) {
        0 => (
            pick(rng, &["postgres", "postgresql", "postgresql+psycopg2"]),
            5432,
        ),
        1 => (pick(rng, &["mysql", "mysql+pymysql", "mariadb"]), 3306),
        2 => (pick(rng, &["mongodb", "mongodb+srv"]), 27017),
        3 => (pick(rng, &["redis", "rediss"]), 6379),
        4 => (pick(rng, &["amqp", "amqps"]), 5672),
        _ => ("postgresql", 6432),
    };
    let user = pick(
        rng,
        &["app", "svc_orders", "deploy", "analytics_ro", "billing"],
    );
    let host = pick(
        rng,
        &[
            "db.internal",
            "10.0.3.17",
            "prod.c9akciq32.eu-west-1.rds.amazonaws.com",
            "cache-1",
        ],
    );
    let url = format!("{scheme}://{user}:{password}@{host}:{port}/main");
    let line = match rng.usize(..3) {
        0 => format!("DATABASE_URL={url}"),
        1 => format!("url = \"{url}\""),
        _ => format!("    \"connection\": \"{url}\","),
    };
    (line, password)
}

fn sample_openai(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        if rng.bool() {
            format!(
                "sk-{}T3BlbkFJ{}",
                random(rng, ALNUM, 20),
                random(rng, ALNUM, 20)
            )
        } else {
            let kind = pick(rng, &["proj", "svcacct", "admin"]);
            format!(
                "sk-{kind}-{}T3BlbkFJ{}",
                random(rng, BASE64URL, 74),
                random(rng, BASE64URL, 74)
            )
        }
    });
    embed(
        rng,
        &[
            "OPENAI_API_KEY={s}",
            "openai.api_key = \"{s}\"",
            "client = OpenAI(api_key=\"{s}\")",
        ],
        secret,
    )
}

fn sample_anthropic(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("sk-ant-api03-{}AA", random(rng, BASE64URL, 93))
    });
    embed(
        rng,
        &["ANTHROPIC_API_KEY={s}", "  -H \"x-api-key: {s}\" \\"],
        secret,
    )
}

fn sample_vault(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("hvs.CAESI{}", random(rng, BASE64URL, 90))
    });
    embed(
        rng,
        &[
            "VAULT_TOKEN={s}",
            "export VAULT_TOKEN=\"{s}\"",
            "  token: {s}",
        ],
        secret,
    )
}

fn sample_databricks(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        let suffix = if rng.bool() { "-2" } else { "" };
        format!("dapi{}{suffix}", random(rng, HEX, 32))
    });
    embed(rng, &["DATABRICKS_TOKEN={s}", "token = {s}"], secret)
}

fn sample_huggingface(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("hf_{}", random(rng, LETTERS, 34))
    });
    embed(
        rng,
        &[
            "HF_TOKEN={s}",
            "huggingface-cli login --token {s}",
            "login(token=\"{s}\")",
        ],
        secret,
    )
}

fn sample_atlassian(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!(
            "ATATT3xFfGF0{}={}",
            random(rng, BASE64URL, 171),
            random(rng, UPPER_HEX, 8)
        )
    });
    embed(
        rng,
        &["JIRA_API_TOKEN={s}", "  confluence_token: \"{s}\""],
        secret,
    )
}

fn sample_google_oauth(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("GOCSPX-{}", random(rng, BASE64URL, 28))
    });
    embed(
        rng,
        &[r#"  "client_secret": "{s}","#, "GOOGLE_CLIENT_SECRET={s}"],
        secret,
    )
}

fn sample_okta(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("00{}", random(rng, BASE64URL, 40))
    });
    embed(
        rng,
        &[
            "OKTA_API_TOKEN={s}",
            "okta_api_key: \"{s}\"",
            "Okta.apiToken = '{s}';",
        ],
        secret,
    )
}

/// 8-bit bytes regrouped as 5-bit values, the last one zero-padded.
fn to_5bit(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = ((acc << 8) | u32::from(b)) & 0xfff;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

fn sample_age(rng: &mut Rng) -> (String, String) {
    let data = to_5bit(&bytes(rng, 32));
    let mut values = bech32_hrp_expand("age-secret-key-");
    values.extend_from_slice(&data);
    values.extend_from_slice(&[0; 6]);
    let polymod = bech32_polymod(&values) ^ 1;
    let checksum = (0..6u32).map(|i| ((polymod >> (5 * (5 - i))) & 31) as u8);
    let encoded: String = data
        .iter()
        .copied()
        .chain(checksum)
        .map(|value| char::from(BECH32[usize::from(value)].to_ascii_uppercase()))
        .collect();
    let secret = format!("AGE-SECRET-KEY-1{encoded}");
    embed(
        rng,
        &["{s}", "SOPS_AGE_KEY={s}", "  age_key: \"{s}\""],
        secret,
    )
}

fn sample_doppler(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("dp.pt.{}", random(rng, ALNUM, 43))
    });
    embed(
        rng,
        &["DOPPLER_TOKEN={s}", "doppler configure set token {s}"],
        secret,
    )
}

fn sample_linear(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("lin_api_{}", random(rng, ALNUM, 40))
    });
    embed(
        rng,
        &["LINEAR_API_KEY={s}", "  Authorization: \"{s}\""],
        secret,
    )
}

fn sample_postman(rng: &mut Rng) -> (String, String) {
    let secret = valid(rng, varied, |rng| {
        format!("PMAK-{}-{}", random(rng, HEX, 24), random(rng, HEX, 34))
    });
    embed(rng, &["POSTMAN_API_KEY={s}", "X-Api-Key: {s}"], secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn find(id: &str) -> Rule {
        builtin()
            .into_iter()
            .find(|rule| rule.id == id)
            .expect("rule exists")
    }

    /// The `secret` captures of `rule` in `text` that pass its check.
    fn reported(rule: &Rule, text: &str) -> Vec<String> {
        rule.pattern
            .captures_iter(text)
            .filter_map(|captures| captures.name("secret"))
            .map(|secret| secret.as_str())
            .filter(|&secret| rule.check.is_none_or(|check| check(secret)))
            .map(str::to_string)
            .collect()
    }

    /// `text` with the ASCII character at `at` replaced by the next one in
    /// `alphabet` (wrapping), so it differs but stays in the alphabet.
    fn corrupt(text: &str, at: usize, alphabet: &[u8]) -> String {
        let mut bytes = text.as_bytes().to_vec();
        let position = alphabet
            .iter()
            .position(|&b| b == bytes[at])
            .expect("character in alphabet");
        bytes[at] = alphabet[(position + 1) % alphabet.len()];
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn ruleset_is_well_formed() {
        let rules = builtin();
        assert!(rules.len() >= 30, "only {} rules", rules.len());
        let mut ids = HashSet::new();
        for rule in &rules {
            assert!(ids.insert(rule.id), "duplicate id {}", rule.id);
            assert!(
                rule.pattern
                    .capture_names()
                    .any(|name| name == Some("secret")),
                "{} has no secret group",
                rule.id
            );
            assert!(!rule.keywords.is_empty(), "{} has no keywords", rule.id);
            assert!(
                rule.keywords.iter().all(|k| !k.is_empty()),
                "{} has an empty keyword",
                rule.id
            );
            assert!(!rule.description.is_empty());
        }
    }

    #[test]
    fn every_sample_is_found_exactly() {
        let mut rng = Rng::with_seed(0x5ec2e7);
        for rule in builtin() {
            for _ in 0..50 {
                let (line, secret) = (rule.sample)(&mut rng);
                assert!(
                    line.contains(&secret),
                    "{}: {secret:?} not in {line:?}",
                    rule.id
                );
                let mut found = false;
                for captures in rule.pattern.captures_iter(&line) {
                    let whole = captures.get(0).expect("match").as_str();
                    assert!(
                        rule.keywords.iter().any(|k| whole.contains(k)),
                        "{}: match {whole:?} holds no keyword",
                        rule.id
                    );
                    if captures
                        .name("secret")
                        .is_some_and(|m| m.as_str() == secret)
                    {
                        found = true;
                    }
                }
                assert!(found, "{}: {secret:?} not captured in {line:?}", rule.id);
                if let Some(check) = rule.check {
                    assert!(
                        check(&secret),
                        "{}: check rejects sample {secret:?}",
                        rule.id
                    );
                }
                assert!(
                    rule.keywords.iter().any(|k| line.contains(k)),
                    "{}: no keyword in {line:?}",
                    rule.id
                );
                assert_eq!(
                    reported(&rule, &line),
                    vec![secret.clone()],
                    "{}: {line:?}",
                    rule.id
                );
            }
        }
    }

    #[test]
    fn base62_crc32_matches_reference_values() {
        // crc32("") = 0; crc32("123456789") = 0xCBF43926 = 3421780262.
        assert_eq!(base62_crc32(""), "000000");
        assert_eq!(base62_crc32("123456789"), "3jZRME");
    }

    #[test]
    fn checksummed_tokens_reject_any_changed_character() {
        let mut rng = Rng::with_seed(11);
        for id in ["github-token", "npm-token"] {
            let rule = find(id);
            let check = rule.check.expect("checked rule");
            for _ in 0..20 {
                let (_, token) = (rule.sample)(&mut rng);
                assert!(check(&token));
                let start = token.find('_').expect("prefix") + 1;
                for at in start..token.len() {
                    assert!(
                        !check(&corrupt(&token, at, ALNUM)),
                        "{id}: {token} changed at {at}"
                    );
                }
            }
        }
        assert!(!crc32_token_ok("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        assert!(!crc32_token_ok("ghp_short"));
    }

    #[test]
    fn aws_key_ids_outside_base32_match_the_pattern_but_fail_the_check() {
        let rule = find("aws-access-key-id");
        let mut rng = Rng::with_seed(14);
        for _ in 0..20 {
            let (line, key) = (rule.sample)(&mut rng);
            assert_eq!(reported(&rule, &line), vec![key.clone()]);
            for digit in ["0", "1", "8", "9"] {
                let made_up = format!("{}{digit}{}", &key[..10], &key[11..]);
                let text = format!("aws_access_key_id = {made_up}");
                assert!(
                    rule.pattern.is_match(&text),
                    "{made_up} should reach the check"
                );
                assert!(reported(&rule, &text).is_empty(), "{made_up}");
            }
        }
    }

    #[test]
    fn bech32_matches_reference_vectors_and_age_keys_reject_changes() {
        // BIP-173 valid test vectors.
        assert!(bech32_ok("A12UEL5L"));
        assert!(bech32_ok("abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw"));
        assert!(!bech32_ok("A12UEL5M"));
        let rule = find("age-secret-key");
        let mut rng = Rng::with_seed(12);
        let upper: Vec<u8> = BECH32.iter().map(u8::to_ascii_uppercase).collect();
        for _ in 0..10 {
            let (_, key) = (rule.sample)(&mut rng);
            assert!(bech32_ok(&key));
            for at in "AGE-SECRET-KEY-1".len()..key.len() {
                assert!(
                    !bech32_ok(&corrupt(&key, at, &upper)),
                    "{key} changed at {at}"
                );
            }
        }
    }

    #[test]
    fn jwt_check_requires_json_header_with_alg_and_json_payload() {
        let encode = |text: &str| URL_SAFE_NO_PAD.encode(text);
        let signature = encode("a signature of thirty-two bytes!");
        let payload = encode(r#"{"sub":"1234567890","name":"Ada"}"#);
        let good = format!(
            "{}.{payload}.{signature}",
            encode(r#"{"alg":"HS256","typ":"JWT"}"#)
        );
        assert!(jwt_ok(&good));
        let rule = find("jwt");
        assert_eq!(
            reported(&rule, &format!("Bearer {good}")),
            vec![good.clone()]
        );
        // Starts like JSON ("eyJ") but does not parse.
        let broken_header = format!(
            "{}.{payload}.{signature}",
            encode(r#"{"alg":"HS256","typ":"#)
        );
        let no_alg = format!("{}.{payload}.{signature}", encode(r#"{"typ":"JWT"}"#));
        let broken_payload = format!(
            "{}.{}.{signature}",
            encode(r#"{"alg":"HS256"}"#),
            encode(r#"{"sub":"1234567890","name":"#)
        );
        for token in [&broken_header, &no_alg, &broken_payload] {
            assert!(
                rule.pattern.is_match(token),
                "{token} should reach the check"
            );
            assert!(!jwt_ok(token), "{token}");
            assert!(reported(&rule, token).is_empty());
        }
    }

    #[test]
    fn structure_checks_reject_corrupted_secrets() {
        let mut rng = Rng::with_seed(13);
        // Azure: the last character before "==" must leave no stray bits.
        let (_, key) = sample_azure_storage_key(&mut rng);
        assert!(azure_key_ok(&key));
        let stray = if key.as_bytes()[85] == b'B' { "C" } else { "B" };
        assert!(!azure_key_ok(&format!("{}{stray}==", &key[..85])));
        // Discord: the first part must be a numeric id.
        let (_, token) = sample_discord(&mut rng);
        assert!(discord_ok(&token));
        let rest = token.split_once('.').expect("dotted").1;
        let not_numeric = format!("{}.{rest}", URL_SAFE_NO_PAD.encode("12345678901234567a"));
        assert!(!discord_ok(&not_numeric));
        // Connection strings: placeholders and templates are not passwords.
        for placeholder in [
            "password",
            "Password123",
            "changeme",
            "${DB_PASSWORD}",
            "$PGPASSWORD",
            "<password>",
            "[password]",
            "{{ db_password }}",
            "%(password)s",
            "xxx",
            "xxxxxxxx",
            "****",
            "guest",
            "postgres",
            "your_db_pass",
        ] {
            assert!(!connection_password_ok(placeholder), "{placeholder}");
        }
        assert!(connection_password_ok("k3J9-vQ2.xLp7"));
    }

    #[test]
    fn multi_line_private_keys_are_found() {
        let rule = find("private-key");
        let body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun";
        let pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\nVvDy9r1Iy6FvtGxk4C2UvvWmF6NJkWD3RzMQUh1D\n-----END RSA PRIVATE KEY-----\n");
        assert_eq!(reported(&rule, &pem), vec![body.to_string()]);
        let encrypted = format!(
            "  -----BEGIN RSA PRIVATE KEY-----\r\n  Proc-Type: 4,ENCRYPTED\r\n  DEK-Info: AES-128-CBC,5E3A2B\r\n\r\n  {body}\r\n"
        );
        assert_eq!(reported(&rule, &encrypted), vec![body.to_string()]);
        let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAABlwAAAAdzc2gtcn\n";
        assert_eq!(reported(&rule, openssh).len(), 1);
        let pgp = format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n{body}\n");
        assert_eq!(reported(&rule, &pgp), vec![body.to_string()]);
    }

    /// Lines that look secret-ish but hold no secret. AWS's documentation
    /// example key id and secret are deliberately NOT reported (see the
    /// module documentation).
    const BENIGN: &[&str] = &[
        r#"password = "changeme""#,
        "DATABASE_URL=postgres://user:password@localhost:5432/app",
        "REDIS_URL=redis://:${REDIS_PASSWORD}@redis:6379/0",
        "MONGO_URI=mongodb+srv://<username>:<password>@cluster0.example.net/test",
        "AMQP_URL=amqp://guest:guest@localhost:5672/",
        "DSN=mysql://root:****@db:3306/shop",
        r#"request_id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301""#,
        "heroku_app_id = 01234567-89ab-cdef-0123-456789abcdef",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        r#"const md5 = "d41d8cd98f00b204e9800998ecf8427e";"#,
        r#"greeting = "SGVsbG8sIHdvcmxkISBUaGlzIGlzIGp1c3QgYW4gb3JkaW5hcnkgc2VudGVuY2Uu""#,
        "Stripe test keys start with sk_test_ and live keys with sk_live_.",
        r#"stripe.api_key = "sk_live_XXXXXXXXXXXXXXXXXXXXXXXX""#,
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        r#"token = "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#,
        "Authorization: Bearer <token>",
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "SLACK_WEBHOOK=https://hooks.slack.com/services/TXXXXXXXX/BXXXXXXXX/XXXXXXXXXXXXXXXXXXXXXXXX",
        "MAILCHIMP_KEY=0123456789abcdef0123456789abcdef-us6",
        "OPENAI_API_KEY=sk-...",
        "AZURE=DefaultEndpointsProtocol=https;AccountName=demo;AccountKey=<your-account-key>;",
        "npm_config_cache=/tmp/npm_cache_0123456789abcdef0123456789abcdef",
        "Join us on Discord: https://discord.gg/abc123",
        "jwt = eyJ... (header.payload.signature)",
        "the build finished at 12:34:56 after 12345:Abort",
    ];

    #[test]
    fn benign_lines_report_nothing() {
        let rules = builtin();
        for line in BENIGN {
            for rule in &rules {
                assert!(
                    reported(rule, line).is_empty(),
                    "{} reports {line:?}",
                    rule.id
                );
            }
        }
    }
}
