//! Chat templates: the few common formats, recognised in a model's Jinja template by substring
//! and rendered by hand (no Jinja engine).

use super::TokenizerError;

/// A chat format Lantern can render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\ncontent<|im_end|>\n` per message. `default_system` is the system
    /// prompt the template adds when the first message is not a system message (SmolLM2:
    /// "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
    ChatMl { default_system: Option<String> },
    /// Llama 3: `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`, after the BOS
    /// text `<|begin_of_text|>`; contents are trimmed. Llama 3.1 and later templates always open
    /// with a system turn that starts `Cutting Knowledge Date: December 2023\nToday Date: ..`;
    /// `today` holds that date (the template's default) for them.
    Llama3 { bos: String, today: Option<String> },
    /// Llama 2: `<s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>`.
    Llama2 { bos: String, eos: String },
}

impl ChatFormat {
    /// Recognises a Jinja chat template. `bos`/`eos` are the vocabulary's BOS and EOS texts.
    pub fn detect(template: &str, bos: &str, eos: &str) -> Result<ChatFormat, TokenizerError> {
        if template.contains("<|im_start|>") {
            return Ok(ChatFormat::ChatMl {
                default_system: chatml_default_system(template),
            });
        }
        if template.contains("<|start_header_id|>") {
            let today = template
                .contains("Cutting Knowledge Date: December 2023")
                .then(|| llama31_date(template));
            return Ok(ChatFormat::Llama3 {
                bos: if bos.is_empty() {
                    "<|begin_of_text|>".to_string()
                } else {
                    bos.to_string()
                },
                today,
            });
        }
        if template.contains("[INST]") && template.contains("<<SYS>>") {
            return Ok(ChatFormat::Llama2 {
                bos: bos.to_string(),
                eos: eos.to_string(),
            });
        }
        let head: String = template.chars().take(80).collect();
        Err(TokenizerError::UnsupportedChatTemplate(head))
    }

    /// Renders `messages` (`(role, content)` pairs). With `add_generation_prompt` the text ends
    /// with the header of an assistant turn, ready for generation.
    pub fn render<R: AsRef<str>, C: AsRef<str>>(
        &self,
        messages: &[(R, C)],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let msgs: Vec<(&str, &str)> = messages
            .iter()
            .map(|(r, c)| (r.as_ref(), c.as_ref()))
            .collect();
        match self {
            ChatFormat::ChatMl { default_system } => Ok(render_chatml(
                &msgs,
                default_system.as_deref(),
                add_generation_prompt,
            )),
            ChatFormat::Llama3 { bos, today } => Ok(render_llama3(
                &msgs,
                bos,
                today.as_deref(),
                add_generation_prompt,
            )),
            ChatFormat::Llama2 { bos, eos } => render_llama2(&msgs, bos, eos),
        }
    }
}

/// The literal system prompt a ChatML template inserts when the conversation has none, e.g.
/// SmolLM2's `'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by
/// Hugging Face<|im_end|>\n'` or Qwen2.5's "You are Qwen, created by Alibaba Cloud. ...".
fn chatml_default_system(template: &str) -> Option<String> {
    let marker = "<|im_start|>system";
    template.match_indices(marker).find_map(|(at, _)| {
        let rest = &template[at + marker.len()..];
        let rest = rest
            .strip_prefix('\n')
            .or_else(|| rest.strip_prefix("\\n"))?;
        let text = &rest[..rest.find("<|im_end|>")?];
        // Only a literal: anything that looks like Jinja or a string boundary means the prompt
        // is computed (or is the user's), which is not a default.
        let computed = ["{{", "{%", "'", "\"", "+"]
            .iter()
            .any(|m| text.contains(m));
        (!computed && !text.is_empty()).then(|| text.replace("\\n", "\n"))
    })
}

/// The default `date_string` of a Llama 3.1-style template (`"26 Jul 2024"` in Meta's).
fn llama31_date(template: &str) -> String {
    let key = "date_string = \"";
    template
        .find(key)
        .and_then(|at| {
            let rest = &template[at + key.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .unwrap_or_else(|| "26 Jul 2024".to_string())
}

fn render_chatml(msgs: &[(&str, &str)], default_system: Option<&str>, gen: bool) -> String {
    let mut s = String::new();
    if let Some(sys) = default_system {
        if msgs.first().is_some_and(|(r, _)| *r != "system") {
            s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
    }
    for (role, content) in msgs {
        s.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
    }
    if gen {
        s.push_str("<|im_start|>assistant\n");
    }
    s
}

fn render_llama3(msgs: &[(&str, &str)], bos: &str, today: Option<&str>, gen: bool) -> String {
    let mut s = String::new();
    let mut msgs = msgs;
    if let Some(today) = today {
        // Llama 3.1+: the system turn is always there and carries the dates.
        let system = match msgs.split_first() {
            Some(((role, content), rest)) if *role == "system" => {
                msgs = rest;
                content.trim()
            }
            _ => "",
        };
        s.push_str(bos);
        s.push_str(&format!(
            "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: {today}\n\n{system}<|eot_id|>"
        ));
    }
    for (i, (role, content)) in msgs.iter().enumerate() {
        if i == 0 && today.is_none() {
            s.push_str(bos);
        }
        s.push_str(&format!(
            "<|start_header_id|>{role}<|end_header_id|>\n\n{}<|eot_id|>",
            content.trim()
        ));
    }
    if gen {
        s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    s
}

fn render_llama2(msgs: &[(&str, &str)], bos: &str, eos: &str) -> Result<String, TokenizerError> {
    let (system, rest) = match msgs.split_first() {
        Some(((role, content), rest)) if *role == "system" => (Some(*content), rest),
        _ => (None, msgs),
    };
    let mut s = String::new();
    for (i, (role, content)) in rest.iter().enumerate() {
        if (*role == "user") != (i % 2 == 0) {
            return Err(TokenizerError::ChatRoles(
                "Llama 2 conversations must alternate user/assistant/user/...".to_string(),
            ));
        }
        let content = match system {
            Some(sys) if i == 0 => format!("<<SYS>>\n{sys}\n<</SYS>>\n\n{content}"),
            _ => content.to_string(),
        };
        if *role == "user" {
            s.push_str(&format!("{bos}[INST] {} [/INST]", content.trim()));
        } else {
            s.push_str(&format!(" {} {eos}", content.trim()));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_adds_its_default_system_prompt() {
        let f = ChatFormat::detect(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let out = f.render(&[("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = f.render(&[("system", "S"), ("user", "Hi")], false).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn unknown_templates_are_an_error() {
        assert!(ChatFormat::detect("{{ messages }}", "", "").is_err());
    }

    #[test]
    fn llama2_folds_the_system_prompt() {
        let f = ChatFormat::Llama2 {
            bos: "<s>".into(),
            eos: "</s>".into(),
        };
        let out = f
            .render(
                &[
                    ("system", "S"),
                    ("user", "a"),
                    ("assistant", "b"),
                    ("user", "c"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\na [/INST] b </s><s>[INST] c [/INST]"
        );
        assert!(f.render(&[("assistant", "x")], false).is_err());
    }
}
