//! The default email templates: subject, text and HTML, for team
//! notifications (leads, alerts, dead-letter copies) and lead confirmations.
//! Blocks are trimmed (`trim_blocks`, `lstrip_blocks`), so `{% … %}` lines
//! leave no blank lines behind.

/// Team notifications: `[subject, text, html]`.
pub const NOTIFICATION: [&str; 3] = [NOTIFICATION_SUBJECT, NOTIFICATION_TEXT, NOTIFICATION_HTML];

/// Lead confirmations: `[subject, text, html]`.
pub const CONFIRMATION: [&str; 3] = [CONFIRMATION_SUBJECT, CONFIRMATION_TEXT, CONFIRMATION_HTML];

const NOTIFICATION_SUBJECT: &str = "\
{% if alert %}[leadrelay] {{ 'Resolved' if alert.status == 'resolved' else 'Alert' }}: {{ alert.message }}\
{% elif dead_letter %}[leadrelay] Delivery to {{ dead_letter.destination }} failed{% if contact.email %} for {{ contact.email }}{% endif %}\
{% else %}New {{ event.type }}{% if event.form %} ({{ event.form }} form){% endif %}: \
{{ contact.full_name or contact.email or contact.phone or 'unknown person' }}{% if contact.company %}, {{ contact.company }}{% endif %}\
{% endif %}";

const NOTIFICATION_TEXT: &str = "\
{% if alert %}
{{ alert.message }}

Destination: {{ alert.destination }}
Alert: {{ alert.alert }} ({{ alert.status }})
{% if alert.url %}Open it: {{ alert.url }}
{% endif %}{% else %}
{% if dead_letter %}
A delivery failed and will not be retried without a person.

Destination: {{ dead_letter.destination }}
Reason: {{ dead_letter.reason }}
Attempts: {{ dead_letter.attempts }}
Original event: {{ original.type }} {{ original.event_id }}

{% endif %}
{{ event.type }} from {{ event.origin.kind }} {{ event.origin.name }}, received {{ event.received_at }}

{% for f in contact_fields %}
{{ f.label }}: {{ f.value }}
{% endfor %}
{% if fields %}

{% for f in fields %}
{{ f.label }}: {{ f.value }}
{% endfor %}
{% endif %}
{% if attribution_fields %}

{% for f in attribution_fields %}
{{ f.label }}: {{ f.value }}
{% endfor %}
{% endif %}

Open in leadrelay: {{ dashboard_url }}
{% endif %}
";

const NOTIFICATION_HTML: &str = "\
<!doctype html>
<html><body style=\"font-family: sans-serif; font-size: 14px; color: #222\">
{% if alert %}
<p><strong>{{ 'Resolved' if alert.status == 'resolved' else 'Alert' }}</strong>: {{ alert.message }}</p>
<p>Destination: {{ alert.destination }}<br>Alert: {{ alert.alert }} ({{ alert.status }})</p>
{% if alert.url %}<p><a href=\"{{ alert.url }}\">Open the issue</a></p>{% endif %}
{% else %}
{% if dead_letter %}
<p><strong>A delivery failed</strong> and will not be retried without a person.</p>
<p>Destination: {{ dead_letter.destination }}<br>Reason: {{ dead_letter.reason }}<br>Attempts: {{ dead_letter.attempts }}</p>
{% endif %}
<p>{{ event.type }} from {{ event.origin.kind }} {{ event.origin.name }}, received {{ event.received_at }}</p>
<table cellpadding=\"4\" style=\"border-collapse: collapse\">
{% for f in contact_fields + fields + attribution_fields %}
<tr><th align=\"left\">{{ f.label }}</th><td>{{ f.value }}</td></tr>
{% endfor %}
</table>
<p><a href=\"{{ dashboard_url|safe }}\">Open in leadrelay</a></p>
{% endif %}
</body></html>
";

const CONFIRMATION_SUBJECT: &str = "\
Thank you for your message{% if contact.first_name %}, {{ contact.first_name }}{% endif %}";

const CONFIRMATION_TEXT: &str = "\
Hi {{ contact.first_name or 'there' }},

thank you for getting in touch. We have received your message and will get back to you soon.
{% if fields %}

What you sent us:
{% for f in fields %}
{{ f.label }}: {{ f.value }}
{% endfor %}
{% endif %}

If this was not you, you can ignore this email.
{% if from_name %}

{{ from_name }}
{% endif %}
";

const CONFIRMATION_HTML: &str = "\
<!doctype html>
<html><body style=\"font-family: sans-serif; font-size: 14px; color: #222\">
<p>Hi {{ contact.first_name or 'there' }},</p>
<p>thank you for getting in touch. We have received your message and will get back to you soon.</p>
{% if fields %}
<p>What you sent us:</p>
<table cellpadding=\"4\" style=\"border-collapse: collapse\">
{% for f in fields %}
<tr><th align=\"left\">{{ f.label }}</th><td>{{ f.value }}</td></tr>
{% endfor %}
</table>
{% endif %}
<p>If this was not you, you can ignore this email.</p>
{% if from_name %}
<p>{{ from_name }}</p>
{% endif %}
</body></html>
";
