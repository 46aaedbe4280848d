//! Reading conversations for the API, at a cost bounded by the page, not by the conversation
//! or the project: one conversation with a page of its messages, and the conversation list.

pub mod conversation;
pub mod cursor;
pub mod list;

pub use conversation::{conversation_page, MessagePage, DEFAULT_MESSAGES, MAX_MESSAGES};
pub use cursor::Cursor;
pub use list::{list_conversations, ConversationFilter, ConversationList, DEFAULT_CONVERSATIONS, MAX_CONVERSATIONS};
