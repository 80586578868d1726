"""The application's use cases, one module each, over one shared :class:`~bot.usecases.context.Context`.

``reception`` (agencies register dossiers, report results), ``binding`` (a citizen opens the
receipt's link in a chat), ``conversation`` (answers), ``rights`` (the citizen's commands, a
registry), ``delivery`` (what the channels report back: sent, refused for good, a platform's own
rating and receipt; channel fallback), ``lifecycle`` (expiry, reminders, purge) and the survey
steps they share (``surveys``: which channel, start, close; ``outbound``: what is queued).

Why one lock discipline: every path that reads an invitation and changes it takes
``storage.coordination.invitation_lock`` of that invitation (``Context.hold``) and re-reads it
inside, so an answer, an expiry, a reminder, a delivery mark and a fallback of one invitation
never interleave. Paths that start from a chat take the chat's lock first, then the
invitation's, never the other way round, so two paths cannot wait on each other. No module here
names a channel: what differs between channels is a ``bot.channels.Capabilities`` field.
"""
