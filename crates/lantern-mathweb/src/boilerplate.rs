//! Boilerplate removal: which elements are page furniture, and which lines of extracted text
//! are navigation, cookie, sharing or login noise.
//!
//! Element rules run on the DOM before rendering (navigation elements, hidden elements, link
//! farms); the line rule runs on the rendered text and never drops a line that holds math or
//! code, following OpenWebMath's phrase scoring.

use crate::html::{Document, NodeId};
use aho_corasick::{AhoCorasick, MatchKind};
use std::sync::OnceLock;

/// Class or id words that mark navigation and page furniture.
const FURNITURE_WORDS: &[&str] = &[
    "breadcrumb",
    "breadcrumbs",
    "cookie",
    "cookies",
    "footer",
    "header",
    "headerlink",
    "menu",
    "nav",
    "navbar",
    "navigation",
    "pagination",
    "prev-next-area",
    "related",
    "related-pages",
    "share",
    "sharing",
    "sidebar",
    "sphinxsidebar",
    "sr-only",
    "toc",
    "visually-hidden",
    "skip-link",
    "social",
    "ads",
];

/// Substrings of a class or id that mark furniture (`bd-sidebar`, `site-footer`, ...).
const FURNITURE_PARTS: &[&str] = &[
    "sidebar",
    "navbar",
    "sidenav",
    "breadcrumb",
    "footer",
    "cookie",
    "prev-next",
    "toc-",
    "-toc",
    "share-",
];

/// Elements dropped with everything inside them.
const FURNITURE_TAGS: &[&str] = &[
    "nav", "aside", "footer", "button", "select", "option", "input", "textarea", "form",
    "noscript", "template", "iframe", "object", "embed", "canvas", "audio", "video", "head",
    "style", "label",
];

/// Whether element `id` is navigation or other furniture that extraction should skip.
pub fn is_furniture(doc: &Document, id: NodeId) -> bool {
    let Some(el) = doc.element(id) else {
        return false;
    };
    if el.name == "aside"
        && (el.attr("role") == Some("note")
            || el.attr("class").is_some_and(|c| c.contains("footnote")))
    {
        return false;
    }
    if FURNITURE_TAGS.contains(&el.name.as_str()) {
        return true;
    }
    if el.name == "header"
        && doc
            .ancestor_where(id, |a| doc.name(a) == Some("article"))
            .is_none()
    {
        return true;
    }
    if is_hidden(el.attr("style"), el.attr("hidden"), el.attr("aria-hidden")) {
        return true;
    }
    if let Some(role) = el.attr("role") {
        if matches!(
            role,
            "navigation" | "banner" | "contentinfo" | "search" | "complementary" | "menu"
        ) {
            return true;
        }
    }
    ["class", "id"]
        .iter()
        .filter_map(|a| el.attr(a))
        .any(names_furniture)
}

/// Whether an element is hidden from readers (`hidden`, `aria-hidden`, `display:none`).
pub fn is_hidden_element(el: &crate::html::Element) -> bool {
    is_hidden(el.attr("style"), el.attr("hidden"), el.attr("aria-hidden"))
}

fn is_hidden(style: Option<&str>, hidden: Option<&str>, aria: Option<&str>) -> bool {
    if hidden.is_some() || aria == Some("true") {
        return true;
    }
    style.is_some_and(|s| {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        s.contains("display:none") || s.contains("visibility:hidden")
    })
}

fn names_furniture(value: &str) -> bool {
    value.split_ascii_whitespace().any(|w| {
        let w = w.to_ascii_lowercase();
        FURNITURE_WORDS.contains(&w.as_str()) || FURNITURE_PARTS.iter().any(|p| w.contains(p))
    })
}

/// Phrases whose presence marks a line as boilerplate (lower case).
const PHRASES: &[&str] = &[
    "previous topic",
    "next topic",
    "show source",
    "show page source",
    "quick search",
    "this page",
    "table of contents",
    "on this page",
    "skip to main content",
    "skip to content",
    "jump to navigation",
    "jump to search",
    "navigation menu",
    "main navigation",
    "toggle navigation",
    "back to top",
    "go to top",
    "scroll to top",
    "edit on github",
    "edit this page",
    "view page source",
    "report an issue",
    "improve this page",
    "last updated",
    "last modified",
    "created using sphinx",
    "built with sphinx",
    "powered by",
    "theme by",
    "all rights reserved",
    "copyright ©",
    "© copyright",
    "privacy policy",
    "terms of use",
    "terms of service",
    "terms and conditions",
    "cookie policy",
    "we use cookies",
    "this website uses cookies",
    "this site uses cookies",
    "accept cookies",
    "accept all",
    "cookie settings",
    "manage cookies",
    "by continuing to use",
    "log in",
    "login",
    "sign in",
    "sign up",
    "create account",
    "forgot password",
    "newsletter",
    "follow us",
    "share this",
    "share on",
    "facebook",
    "twitter",
    "linkedin",
    "pinterest",
    "reddit",
    "whatsapp",
    "email this",
    "print this",
    "print page",
    "permalink",
    "related posts",
    "related articles",
    "recent posts",
    "popular posts",
    "you may also like",
    "read more",
    "continue reading",
    "leave a comment",
    "leave a reply",
    "post a comment",
    "comments are closed",
    "add comment",
    "posted by",
    "posted on",
    "posted in",
    "tags:",
    "contact us",
    "about us",
    "sitemap",
    "site map",
    "search this site",
    "search for:",
    "next page",
    "previous page",
    "next post",
    "previous post",
    "older posts",
    "newer posts",
    "page 1 of",
    "download pdf",
    "download as",
    "free trial",
    "buy now",
    "add to cart",
    "advertisement",
    "loading...",
    "javascript is disabled",
    "enable javascript",
    "please enable javascript",
    "your browser",
    "upgrade your browser",
    "all posts",
    "view all",
    "see all",
    "more info",
    "learn more",
    "click here",
    "rss feed",
    "atom feed",
    "subscribe to",
    "like this",
    "liked by",
    "upvote",
    "downvote",
    "bookmark",
    "improve this answer",
    "improve this question",
    "share improve",
    "add a comment",
    "community wiki",
    "report abuse",
    "hot network questions",
    "featured on meta",
    "related questions",
    "not the answer you're looking for",
    "browse other questions",
    "your answer",
    "post your answer",
    "sign up or log in",
    "required, but never shown",
    "by clicking",
    "accept all cookies",
    "customize settings",
    "necessary cookies",
];

/// Whole lines that are navigation on their own (compared lower-cased, punctuation trimmed).
const NAV_LINES: &[&str] = &[
    "search",
    "menu",
    "home",
    "reply",
    "share",
    "next",
    "previous",
    "prev",
    "top",
    "contents",
    "index",
    "edit",
    "print",
    "tweet",
    "subscribe",
    "advertisement",
    "sponsored",
    "login",
    "logout",
    "register",
    "close",
    "toggle",
    "navigation",
    "table of contents",
    "categories",
    "archives",
    "tags",
    "follow",
    "comments",
    "loading",
    "more",
    "back",
];

/// Whether the whole line is a bare navigation word.
fn is_nav_line(line: &str) -> bool {
    let t = line
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    NAV_LINES.contains(&t.as_str())
}

/// Which lines of a rendered page survive, by OpenWebMath's phrase rule.
///
/// A line's score is the share of its words covered by boilerplate phrases; a line is dropped
/// when that share exceeds `ratio` or it holds more than `max_count` phrases, unless
/// `protected[i]` (the line holds math or code). A drop within the last `tail` lines cuts
/// everything after it (footers).
pub fn keep_lines(
    lines: &[&str],
    protected: &[bool],
    ratio: f64,
    max_count: usize,
    tail: usize,
) -> Vec<bool> {
    let mut keep = vec![true; lines.len()];
    let tail_start = lines.len().saturating_sub(tail);
    for (i, line) in lines.iter().enumerate() {
        if protected.get(i).copied().unwrap_or(false) || line.trim().is_empty() {
            continue;
        }
        let (covered, count) = phrase_cover(line);
        let words = line.split_whitespace().count().max(1);
        if is_nav_line(line) || covered as f64 / words as f64 > ratio || count > max_count {
            keep[i] = false;
            if i >= tail_start {
                for k in keep.iter_mut().skip(i) {
                    *k = false;
                }
                for (j, p) in protected.iter().enumerate().skip(i) {
                    keep[j] = *p;
                }
                break;
            }
        }
    }
    keep
}

/// One automaton over all phrases, built on first use.
fn phrase_matcher() -> &'static AhoCorasick {
    static MATCHER: OnceLock<AhoCorasick> = OnceLock::new();
    MATCHER.get_or_init(|| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(PHRASES)
            .expect("the phrase list is a valid automaton")
    })
}

/// Words of `line` covered by boilerplate phrases, and how many phrases occur (whole words
/// only, ASCII case-insensitive, one pass over the line).
fn phrase_cover(line: &str) -> (usize, usize) {
    let mut covered = 0;
    let mut count = 0;
    let bytes = line.as_bytes();
    for m in phrase_matcher().find_iter(line) {
        let starts_word = m.start() == 0 || !bytes[m.start() - 1].is_ascii_alphanumeric();
        let ends_word = m.end() == bytes.len() || !bytes[m.end()].is_ascii_alphanumeric();
        if starts_word && ends_word {
            count += 1;
            covered += PHRASES[m.pattern().as_usize()].split_whitespace().count();
        }
    }
    (covered, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_navigation_lines_but_not_prose_or_math() {
        let lines = [
            "The integral $\\int_0^1 x\\,dx$ equals one half, as the previous topic showed.",
            "Previous topic",
            "Quick search",
            "Show Source",
            "We search for the minimum over all feasible points in the domain of the problem.",
            "Next topic $x$",
        ];
        let protected = [true, false, false, false, false, true];
        let keep = keep_lines(&lines, &protected, 0.18, 10, 0);
        assert_eq!(keep, [true, false, false, false, true, true]);
    }

    #[test]
    fn a_drop_near_the_end_cuts_the_footer() {
        let lines = [
            "Real content line one here.",
            "Body two.",
            "Privacy Policy",
            "Some trailing words",
        ];
        let keep = keep_lines(&lines, &[false; 4], 0.18, 10, 3);
        assert_eq!(keep, [true, true, false, false]);
    }

    #[test]
    fn furniture_elements() {
        let doc = Document::parse(
            "<div class='bd-sidebar'>a</div><p style='display: none'>b</p><div role=main>c</div><a class=headerlink>¶</a>",
        );
        let ids: Vec<_> = doc.children(0).to_vec();
        let flags: Vec<_> = ids.iter().map(|&i| is_furniture(&doc, i)).collect();
        assert_eq!(flags, [true, true, false, true]);
    }
}
