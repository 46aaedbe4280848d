//! Chat adapters: slack, telegram, whatsapp, twilio-sms.
