//! A model's chat template (Jinja, as transformers renders it), with the fallback a model card
//! names when the checkpoint ships none.

use anyhow::{Context, Result};
use minijinja::{context, Environment, Error, ErrorKind};

use crate::hub::ModelFiles;

#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    origin: String,
}

impl ChatTemplate {
    pub fn new(source: impl Into<String>, origin: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            origin: origin.into(),
        }
    }

    /// The template the checkpoint carries, looked up where transformers writes it
    /// (chat_template.jinja, chat_template.json, tokenizer_config.json), else `default`.
    pub fn for_model(files: &ModelFiles, default: &str) -> Result<Self> {
        if let Some(path) = files.optional("chat_template.jinja") {
            let source = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            return Ok(Self::new(source, path.display().to_string()));
        }
        for file in ["chat_template.json", "tokenizer_config.json"] {
            let Some(json) = files.read_json(file)? else {
                continue;
            };
            let template = match json.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // A list of named templates: take "default".
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(String::from)),
                _ => None,
            };
            if let Some(source) = template {
                return Ok(Self::new(source, files.path(file).display().to_string()));
            }
        }
        Ok(Self::new(default, "the model card's default template"))
    }

    /// One user turn holding an image and then `prompt`, followed by the assistant's opening.
    pub fn render_image_prompt(&self, prompt: &str) -> Result<String> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source)
            .with_context(|| format!("parsing the chat template from {}", self.origin))?;
        let messages = vec![context! {
            role => "user",
            content => vec![context! { type => "image" }, context! { type => "text", text => prompt }],
        }];
        env.get_template("chat")?
            .render(context! { messages, add_generation_prompt => true })
            .with_context(|| format!("rendering the chat template from {}", self.origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen2_vl_template_renders_the_documented_prompt() {
        let t = ChatTemplate::new(include_str!("../models/rolmocr/chat_template.jinja"), "test");
        let text = t.render_image_prompt("Read this.").unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
             <|vision_start|><|image_pad|><|vision_end|>Read this.<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
