"""The Discord bot: slash commands on hikari + lightbulb, over the gateway or HTTP interactions."""
