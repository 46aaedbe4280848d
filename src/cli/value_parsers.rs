//! clap value parsers shared by several subcommands' flags.

use intake_adapters::ChannelType;

pub(super) fn parse_channel_type(s: &str) -> Result<ChannelType, String> {
    s.parse()
}
