//! Every text of the UI in English and Russian, by key. A test checks that every key a
//! template or page uses is here, in both languages.

use std::collections::HashMap;
use std::sync::LazyLock;
use voronka_domain::Lang;

/// The channels a lead can come from, in the order filters show them.
pub const CHANNELS: &[&str] = &[
    "web_form",
    "callback",
    "chat",
    "call",
    "email",
    "social",
    "messenger",
    "offline",
    "import",
    "cpa",
    "referral",
    "word_of_mouth",
    "api",
];

/// `(key, English, Russian)`.
pub const TEXTS: &[(&str, &str, &str)] = &[
    // navigation and frame
    ("nav.inbox", "Inbox", "Входящие"),
    ("nav.kanban", "Kanban", "Канбан"),
    ("nav.tasks", "Tasks", "Задачи"),
    ("nav.dashboard", "Dashboard", "Аналитика"),
    ("nav.settings", "Settings", "Настройки"),
    ("nav.logout", "Log out", "Выйти"),
    ("nav.switch_lang", "Русский", "English"),
    ("error.title", "Something went wrong", "Что-то пошло не так"),
    ("error.back", "Back to the inbox", "Вернуться во входящие"),
    (
        "error.csrf",
        "The form has expired or came from another site. Reload the page and try again.",
        "Форма устарела или отправлена с другого сайта. Обновите страницу и повторите.",
    ),
    ("common.save", "Save", "Сохранить"),
    ("common.ok", "OK", "ОК"),
    ("common.cancel", "Cancel", "Отмена"),
    ("common.yes", "yes", "да"),
    ("common.no", "no", "нет"),
    // login
    ("login.title", "Log in", "Вход"),
    ("login.tagline", "Leads from the first request to a signed client", "Лиды от первой заявки до подписанного клиента"),
    ("login.email", "E-mail", "E-mail"),
    ("login.password", "Password", "Пароль"),
    ("login.submit", "Log in", "Войти"),
    ("login.failed", "Wrong e-mail or password", "Неверный e-mail или пароль"),
    ("login.expired", "The login form has expired; please try again", "Форма входа устарела; попробуйте ещё раз"),
    ("login.throttled", "Too many failed attempts; try again in {s} s", "Слишком много неудачных попыток; повторите через {s} с"),
    // flash messages after an action
    ("flash.activity_logged", "Logged", "Записано"),
    ("flash.status_changed", "State changed", "Статус изменён"),
    ("flash.task_created", "Task added", "Задача добавлена"),
    ("flash.task_done", "Task done", "Задача выполнена"),
    ("flash.lead_saved", "Saved", "Сохранено"),
    ("flash.nothing_changed", "Nothing changed", "Изменений нет"),
    ("flash.lead_assigned", "Assigned", "Назначено"),
    ("flash.lead_converted", "Converted into a client", "Лид конвертирован в клиента"),
    ("flash.site_created", "Site added", "Сайт добавлен"),
    ("flash.form_created", "Form added", "Форма добавлена"),
    ("flash.model_saved", "Scoring model saved; every lead re-scored", "Модель скоринга сохранена; все лиды пересчитаны"),
    ("flash.settings_saved", "Settings saved", "Настройки сохранены"),
    ("flash.user_created", "User added", "Пользователь добавлен"),
    ("flash.user_saved", "User saved", "Пользователь сохранён"),
    ("flash.token_created", "Token created", "Токен создан"),
    ("flash.import_started", "Import started: its progress is below", "Импорт запущен: ход — в таблице ниже"),
    ("flash.import_undone", "Import undone", "Импорт отменён"),
    ("flash.token_revoked", "Token revoked", "Токен отозван"),
    // states, temperature
    ("status.new", "New", "Новый"),
    ("status.nurturing", "Nurturing", "Прогрев"),
    ("status.sales_ready", "Sales-ready", "Готов к продаже"),
    ("status.assigned", "Assigned", "Назначен"),
    ("status.in_progress", "In progress", "В работе"),
    ("status.qualified", "Qualified", "Квалифицирован"),
    ("status.converted", "Converted", "Конвертирован"),
    ("status.refused", "Refused", "Отказ"),
    ("status.junk", "Junk", "Нецелевой"),
    ("status.postponed", "Postponed", "Отложен"),
    ("temp.hot", "hot", "горячий"),
    ("temp.warm", "warm", "тёплый"),
    ("temp.cold", "cold", "холодный"),
    // channels
    ("channel.web_form", "Web form", "Веб-форма"),
    ("channel.callback", "Callback request", "Обратный звонок"),
    ("channel.chat", "Site chat", "Чат на сайте"),
    ("channel.call", "Phone call", "Звонок"),
    ("channel.email", "E-mail", "E-mail"),
    ("channel.social", "Social network", "Соцсеть"),
    ("channel.messenger", "Messenger", "Мессенджер"),
    ("channel.offline", "Offline event", "Офлайн-мероприятие"),
    ("channel.import", "File import", "Импорт из файла"),
    ("channel.cpa", "Lead exchange / CPA", "Биржа лидов / CPA"),
    ("channel.referral", "Referral", "Рекомендация"),
    ("channel.word_of_mouth", "Word of mouth", "Сарафанное радио"),
    ("channel.api", "API", "API"),
    // lead fields
    ("lead.name", "Name", "Имя"),
    ("lead.contacts", "Contacts", "Контакты"),
    ("lead.phone", "Phone", "Телефон"),
    ("lead.email", "E-mail", "E-mail"),
    ("lead.messenger", "Messenger", "Мессенджер"),
    ("lead.company", "Company", "Компания"),
    ("lead.position", "Position", "Должность"),
    ("lead.city", "City", "Город"),
    ("lead.interest", "Interest", "Интерес"),
    ("lead.message", "Message", "Сообщение"),
    ("lead.budget", "Budget", "Бюджет"),
    ("lead.channel", "Channel", "Канал"),
    ("lead.campaign", "Campaign", "Кампания"),
    ("lead.source", "Source", "Источник"),
    ("lead.referrer", "Referrer", "Откуда пришёл"),
    ("lead.landing_page", "Landing page", "Страница входа"),
    ("lead.tracking_number", "Tracking number", "Номер коллтрекинга"),
    ("lead.field", "Field", "Поле"),
    ("lead.consent", "Marketing consent", "Согласие на рассылку"),
    ("lead.status", "State", "Статус"),
    ("lead.temperature", "Temperature", "Температура"),
    ("lead.score", "Score", "Баллы"),
    ("lead.priority", "Priority", "Приоритет"),
    ("lead.owner", "Owner", "Ответственный"),
    ("lead.created", "Created", "Создан"),
    ("utm.source", "utm_source", "utm_source"),
    ("utm.medium", "utm_medium", "utm_medium"),
    ("utm.campaign", "utm_campaign", "utm_campaign"),
    ("utm.content", "utm_content", "utm_content"),
    ("utm.term", "utm_term", "utm_term"),
    // inbox
    ("inbox.all", "All", "Все"),
    ("inbox.unsorted", "Unsorted", "Неразобранные"),
    ("inbox.mine", "Mine", "Мои"),
    ("inbox.search", "Name, company, e-mail or phone", "Имя, компания, e-mail или телефон"),
    ("inbox.any_status", "Any state", "Любой статус"),
    ("inbox.any_channel", "Any channel", "Любой канал"),
    ("inbox.any_temperature", "Any temperature", "Любая температура"),
    ("inbox.sort_priority", "By priority", "По приоритету"),
    ("inbox.export", "Export", "Выгрузить"),
    ("inbox.sort_score", "By score", "По баллам"),
    ("inbox.sort_created", "Newest first", "Сначала новые"),
    ("inbox.apply", "Show", "Показать"),
    ("inbox.empty", "No leads here", "Здесь нет лидов"),
    ("inbox.next_page", "Next page →", "Следующая страница →"),
    ("inbox.first_page", "← First page", "← В начало"),
    // card
    ("card.no_name", "(no name)", "(без имени)"),
    ("card.client", "Client", "Клиент"),
    ("card.repeats", "Repeat requests", "Повторные обращения"),
    ("card.returning", "Returning: earlier lead", "Вернулся: прошлый лид"),
    ("card.contacts", "Contacts", "Контакты"),
    ("card.edit", "Edit contacts", "Изменить контакты"),
    ("card.source", "Source and UTM", "Источник и UTM"),
    ("card.completeness", "Card completeness", "Заполненность карточки"),
    ("card.missing", "Missing", "Не заполнено"),
    ("card.score", "Score explanation", "Из чего сложились баллы"),
    ("card.rule", "Rule", "Правило"),
    ("card.points_now", "Points now", "Баллы сейчас"),
    ("card.points_earned", "Earned", "Начислено"),
    ("card.when", "When", "Когда"),
    ("card.total", "Total", "Итого"),
    ("card.no_points", "No points yet", "Баллов пока нет"),
    ("card.script", "Script", "Скрипт"),
    ("card.log", "Log an activity", "Записать действие"),
    ("card.log_submit", "Log", "Записать"),
    ("card.direction_in", "incoming", "входящий"),
    ("card.direction_out", "outgoing", "исходящий"),
    ("card.minutes", "min", "мин"),
    ("card.duration", "duration", "длительность"),
    ("card.result", "Result", "Результат"),
    ("card.text", "Notes", "Комментарий"),
    ("card.change_status", "Change state", "Сменить статус"),
    ("card.change_submit", "Change", "Сменить"),
    ("card.reason", "reason", "причина"),
    ("card.reason_refused", "Refusal reason", "Причина отказа"),
    ("card.reason_junk", "Junk reason", "Причина нецелевого"),
    ("card.until", "Until", "До"),
    ("card.comment", "Comment", "Комментарий"),
    ("card.assign", "Assign to", "Назначить"),
    ("card.assign_submit", "Assign", "Назначить"),
    ("card.convert", "Convert into a client", "Конвертировать в клиента"),
    ("card.tasks", "Tasks", "Задачи"),
    ("card.timeline", "Timeline", "История"),
    ("convert.contact", "Contact", "Контакт"),
    ("convert.company", "Company", "Компания"),
    ("convert.company_name", "Company name", "Название компании"),
    ("convert.inn", "INN", "ИНН"),
    ("convert.kpp", "KPP", "КПП"),
    ("convert.ogrn", "OGRN", "ОГРН"),
    ("convert.okpo", "OKPO", "ОКПО"),
    ("convert.employees", "Employees", "Сотрудников"),
    ("convert.industry", "Industry", "Отрасль"),
    ("convert.deal", "Deal", "Сделка"),
    ("convert.deal_title", "Deal title", "Название сделки"),
    ("convert.amount", "Amount, RUB", "Сумма, ₽"),
    ("convert.submit", "Convert", "Конвертировать"),
    ("score.profile", "profile", "профиль"),
    ("score.behaviour", "behaviour", "поведение"),
    // activities, tasks, timeline events
    ("activity.call", "Call", "Звонок"),
    ("activity.email", "E-mail", "Письмо"),
    ("activity.meeting", "Meeting", "Встреча"),
    ("activity.proposal", "Proposal sent", "Отправлено КП"),
    ("activity.chat", "Chat reply", "Ответ в чате"),
    ("activity.note", "Note", "Заметка"),
    ("task.call", "Call", "Позвонить"),
    ("task.email", "E-mail", "Написать"),
    ("task.meeting", "Meeting", "Встреча"),
    ("task.proposal", "Proposal", "КП"),
    ("task.other", "Other", "Другое"),
    ("event.lead_created", "Request received", "Получена заявка"),
    ("event.repeat_request", "Repeat request", "Повторная заявка"),
    ("event.lead_returned", "Came back as a new lead", "Вернулся новым лидом"),
    ("event.assigned", "Assigned", "Назначен"),
    ("event.queued", "Waiting for someone on duty", "Ждёт дежурного менеджера"),
    ("event.escalated", "Escalated: no first touch in time", "Эскалация: не обработан вовремя"),
    ("event.field_changed", "Field changed", "Изменено поле"),
    ("event.task_created", "Task added", "Добавлена задача"),
    ("event.task_done", "Task done", "Задача выполнена"),
    ("event.converted", "Converted into a client", "Конвертирован в клиента"),
    ("event.page_view", "Page view", "Просмотр страницы"),
    ("event.video_view", "Video watched", "Просмотр видео"),
    ("event.download", "Download", "Скачивание"),
    ("event.calculator", "Used the calculator", "Расчёт в калькуляторе"),
    ("event.presentation_request", "Asked for the presentation", "Запрос презентации"),
    ("event.callback_request", "Asked for a callback", "Заказ обратного звонка"),
    ("event.chat_message", "Chat message", "Сообщение в чате"),
    ("event.email_open", "E-mail opened", "Открыто письмо"),
    ("event.email_click", "E-mail link clicked", "Переход из письма"),
    ("reason.first_touch", "first touch", "первое касание"),
    ("reason.score_threshold", "score reached the threshold", "баллы достигли порога"),
    ("reason.postponed_until", "the postponement ended", "срок отсрочки истёк"),
    // tasks page
    ("tasks.mine", "Mine", "Мои"),
    ("tasks.overdue", "Overdue", "Просроченные"),
    ("tasks.team", "Team", "Команда"),
    ("tasks.team_overdue", "Team overdue", "Просроченные в команде"),
    ("tasks.due", "Due", "Срок"),
    ("tasks.kind", "Kind", "Тип"),
    ("tasks.title", "Task", "Задача"),
    ("tasks.lead", "Lead", "Лид"),
    ("tasks.assignee", "Assignee", "Исполнитель"),
    ("tasks.done", "Done", "Выполнено"),
    ("tasks.add", "Add task", "Добавить задачу"),
    ("tasks.empty", "No open tasks", "Открытых задач нет"),
    ("tasks.cards", "Card completeness", "Заполненность карточек"),
    ("tasks.manager", "Manager", "Менеджер"),
    ("tasks.open_leads", "Open leads", "Лидов в работе"),
    ("tasks.average", "Average completeness", "Средняя заполненность"),
    ("tasks.normal", "Filled to the normal", "Заполнено по норме"),
    ("tasks.no_cards", "No open leads with an owner", "Нет лидов в работе у менеджеров"),
    // kanban
    (
        "kanban.hint",
        "Drag a card to another column to change the lead's state.",
        "Перетащите карточку в другую колонку, чтобы сменить статус лида.",
    ),
    ("kanban.moved", "Moved", "Перемещено"),
    ("kanban.reason_needed", "A reason is needed", "Нужна причина"),
    // dashboard
    ("dash.week", "7 days", "7 дней"),
    ("dash.month", "30 days", "30 дней"),
    ("dash.quarter", "Quarter", "Квартал"),
    ("dash.per_day", "Leads per day by channel", "Лиды по дням и каналам"),
    ("dash.total", "total", "всего"),
    ("dash.leads", "Leads", "Лиды"),
    ("dash.funnel", "Funnel by state", "Воронка по статусам"),
    ("dash.sla", "First touch within the SLA", "Обработаны в срок (SLA)"),
    ("dash.sla_within", "in time", "в срок"),
    ("dash.sla_missed", "late", "с опозданием"),
    ("dash.sla_measured", "measured", "учтено"),
    ("dash.escalations", "escalations", "эскалаций"),
    // settings
    ("settings.sources", "Sources and forms", "Источники и формы"),
    ("settings.scoring", "Scoring model", "Модель скоринга"),
    ("settings.workflow", "Assignment and SLAs", "Распределение и SLA"),
    ("settings.reasons", "Reasons", "Причины"),
    ("settings.users", "Users and schedules", "Пользователи и графики"),
    ("settings.tokens", "API tokens", "API-токены"),
    ("settings.webhooks", "Webhooks", "Вебхуки"),
    ("dash.responses", "Calls and chats", "Звонки и чаты"),
    ("dash.calls", "Calls", "Звонки"),
    ("dash.calls_answered", "answered", "отвечено"),
    ("dash.calls_missed", "missed", "пропущено"),
    ("dash.call_wait", "mean wait of answered calls", "среднее ожидание отвеченных"),
    ("dash.chats", "Chats", "Чаты"),
    ("dash.chat_reply", "mean time to the first reply", "среднее время до первого ответа"),
    ("dash.seconds", "s", "с"),
    ("settings.save", "Save", "Сохранить"),
    ("webhooks.triage", "Channels that need triage", "Каналы с ручным разбором"),
    (
        "webhooks.triage_help",
        "New requests of the checked channels wait in the unsorted inbox until someone accepts, declines or links them.",
        "Новые заявки отмеченных каналов ждут в «Неразобранных», пока их не примут, не отклонят или не привяжут к лиду.",
    ),
    ("webhooks.inbound", "Inbound webhooks", "Входящие вебхуки"),
    (
        "webhooks.inbound_help",
        "Call tracking, chats, social lead forms and landing-page builders post here. Each request is signed: X-Voronka-Timestamp (Unix seconds) and X-Voronka-Signature: sha256=HMAC-SHA256(secret, \"timestamp.body\"), within 300 seconds; a repeated event id is ignored.",
        "Сюда отправляют данные коллтрекинг, чаты, лид-формы соцсетей и конструкторы лендингов. Каждый запрос подписан: X-Voronka-Timestamp (секунды Unix) и X-Voronka-Signature: sha256=HMAC-SHA256(секрет, \"timestamp.body\"), не старше 300 секунд; повтор события с тем же id не учитывается.",
    ),
    ("webhooks.kind", "Kind", "Тип"),
    ("webhooks.address", "Address", "Адрес"),
    ("webhooks.secret", "Secret", "Секрет"),
    ("webhooks.rotate", "New secret", "Новый секрет"),
    (
        "webhooks.rotate_confirm",
        "Issue a new secret? The old one stops working at once.",
        "Выпустить новый секрет? Старый сразу перестанет работать.",
    ),
    ("webhooks.disable", "Disable", "Отключить"),
    ("webhooks.enable", "Enable", "Включить"),
    ("webhooks.no_endpoints", "No inbound webhooks yet", "Входящих вебхуков пока нет"),
    ("webhooks.channel_default", "Channel by kind", "Канал по типу"),
    (
        "webhooks.mapping",
        "Mapping (JSON): for a generic hook, lead field → path in the body; for lead ads, {\"forms\": {\"FORM_ID\": \"campaign\"}}; for calls, {\"numbers\": {\"tracking number\": \"campaign\"}}",
        "Сопоставление (JSON): для универсального — поле лида → путь в теле запроса; для лид-форм — {\"forms\": {\"ID формы\": \"кампания\"}}; для звонков — {\"numbers\": {\"номер\": \"кампания\"}}",
    ),
    ("webhooks.add_endpoint", "Add inbound webhook", "Добавить входящий вебхук"),
    ("webhooks.outbound", "Outbound webhooks", "Исходящие вебхуки"),
    (
        "webhooks.outbound_help",
        "Other systems hear about leads: each delivery is signed like inbound ones and carries X-Voronka-Event-Id for de-duplication; failures are retried with growing pauses for 24 hours, then kept below as undelivered. Internal addresses are refused.",
        "Другие системы узнают о лидах: каждая доставка подписана так же, как входящие, и несёт X-Voronka-Event-Id для защиты от дублей; неудачи повторяются с растущими паузами 24 часа, затем остаются ниже как недоставленные. Внутренние адреса запрещены.",
    ),
    ("webhooks.events", "Events", "События"),
    ("webhooks.event", "Event", "Событие"),
    ("webhooks.delete", "Delete", "Удалить"),
    (
        "webhooks.delete_confirm",
        "Delete this subscription? Its pending deliveries are cancelled.",
        "Удалить подписку? Её неотправленные доставки будут отменены.",
    ),
    ("webhooks.no_subscriptions", "No outbound webhooks yet", "Исходящих вебхуков пока нет"),
    ("webhooks.add_subscription", "Add outbound webhook", "Добавить исходящий вебхук"),
    ("webhooks.deliveries", "Recent deliveries", "Последние доставки"),
    ("webhooks.attempts", "Attempts", "Попытки"),
    ("webhooks.last", "Last answer", "Последний ответ"),
    ("webhooks.next", "next try", "следующая попытка"),
    ("webhooks.retry", "Send again", "Отправить снова"),
    ("webhooks.no_deliveries", "Nothing sent yet", "Пока ничего не отправлено"),
    ("hook.call_tracking", "Call tracking", "Коллтрекинг"),
    ("hook.chat", "Site chat", "Чат на сайте"),
    ("hook.lead_ad", "Social lead form (VK, Facebook)", "Лид-форма соцсети (VK, Facebook)"),
    ("hook.generic", "Generic (landing-page builder)", "Универсальный (конструктор лендингов)"),
    ("delivery.pending", "Pending", "В очереди"),
    ("delivery.delivered", "Delivered", "Доставлено"),
    ("delivery.dead", "Undelivered", "Не доставлено"),
    ("delivery.cancelled", "Cancelled", "Отменено"),
    ("flash.channels_saved", "Channels saved", "Каналы сохранены"),
    ("flash.endpoint_created", "Inbound webhook added", "Входящий вебхук добавлен"),
    ("flash.endpoint_saved", "Inbound webhook saved", "Входящий вебхук сохранён"),
    ("flash.subscription_created", "Outbound webhook added", "Исходящий вебхук добавлен"),
    ("flash.subscription_deleted", "Outbound webhook deleted", "Исходящий вебхук удалён"),
    ("flash.delivery_retried", "Will be sent again", "Будет отправлено снова"),
    ("flash.leads_merged", "Leads merged", "Лиды объединены"),
    ("flash.leads_unmerged", "Merge undone: both leads are back", "Объединение отменено: оба лида восстановлены"),
    ("flash.triage_done", "Done", "Готово"),
    ("merge.title", "Merge with another lead", "Объединить с другим лидом"),
    (
        "merge.help",
        "The other lead's contacts, timeline and tasks move here; it is closed as a duplicate. The merge can be undone.",
        "Контакты, история и задачи другого лида перейдут сюда, а он будет закрыт как дубль. Объединение можно отменить.",
    ),
    ("merge.other", "Lead id, phone or e-mail", "ID лида, телефон или e-mail"),
    ("merge.submit", "Merge", "Объединить"),
    ("merge.log", "Merges", "Объединения"),
    ("merge.into_this", "merged into this lead:", "объединён с этим лидом:"),
    ("merge.into_other", "this lead was merged into", "этот лид объединён с"),
    ("merge.undo", "Undo", "Отменить"),
    ("merge.undo_confirm", "Split the leads back?", "Разделить лиды обратно?"),
    ("merge.undone", "undone", "отменено"),
    ("triage.title", "Waiting for triage", "Ждут разбора"),
    (
        "triage.help",
        "Accept takes the request into work; decline closes it as junk with a reason; link adds it to the person's existing lead.",
        "«Принять» — взять в работу; «Отклонить» — закрыть как некачественный с причиной; «Привязать» — добавить к существующему лиду этого человека.",
    ),
    ("triage.accept", "Accept", "Принять"),
    ("triage.decline", "Decline", "Отклонить"),
    ("triage.link", "Link", "Привязать"),
    ("triage.rest", "Not taken yet", "Ещё не взяты"),
    ("event.merged", "Merged with another lead", "Объединён с другим лидом"),
    ("event.merged_into", "Merged into another lead", "Объединён в другой лид"),
    ("event.unmerged", "Merge undone", "Объединение отменено"),
    ("event.triage_accepted", "Taken from the unsorted inbox", "Принят из неразобранных"),
    ("settings.import", "Import", "Импорт"),
    (
        "import.help",
        "A CSV (UTF-8 or Windows-1251; separated by , ; or tab) or XLSX file with a header row. Columns named Имя/ФИО/Name, Телефон/Phone, Email/Почта, Компания/Company, Должность/Position, Город/City, Комментарий/Comment and utm_* are recognised; other columns are kept as the lead's own fields. Every row goes through deduplication and scoring.",
        "Файл CSV (UTF-8 или Windows-1251; разделитель , ; или табуляция) или XLSX со строкой заголовков. Столбцы Имя/ФИО/Name, Телефон/Phone, Email/Почта, Компания/Company, Должность/Position, Город/City, Комментарий/Comment и utm_* распознаются сами; остальные сохраняются как свои поля лида. Каждая строка проходит проверку на дубли и скоринг.",
    ),
    ("import.file", "File", "Файл"),
    ("import.source", "Source", "Источник"),
    ("import.source_hint", "e.g. Exhibition 2026", "например, Выставка 2026"),
    ("import.dry_run", "Dry run", "Пробный прогон"),
    ("import.mapping", "Column mapping", "Сопоставление столбцов"),
    (
        "import.mapping_help",
        "JSON: column → lead field (\"\" ignores the column); remembered for the source. Fields:",
        "JSON: столбец → поле лида (\"\" — пропустить столбец); запоминается для источника. Поля:",
    ),
    ("import.start", "Import", "Импортировать"),
    ("import.status", "Status", "Состояние"),
    ("import.status.running", "Running", "Идёт"),
    ("import.status.done", "Done", "Готово"),
    ("import.status.failed", "Interrupted (resumes)", "Прерван (продолжится)"),
    ("import.status.undone", "Undone", "Отменён"),
    ("import.status.undoing", "Undoing", "Отменяется"),
    ("import.created", "New", "Новых"),
    ("import.repeats", "Repeat", "Повторных"),
    ("import.returned", "Returning", "Вернувшихся"),
    ("import.rejected", "Rejected", "Отклонено"),
    ("import.removed", "removed", "удалено"),
    ("import.kept", "kept (worked on)", "оставлено (с ними работали)"),
    ("import.report", "Report", "Отчёт"),
    ("import.undo", "Undo", "Отменить"),
    (
        "import.undo_confirm",
        "Remove the leads this import created (except those worked on) and its repeat requests?",
        "Удалить лиды, созданные этим импортом (кроме тех, с которыми работали), и его повторные обращения?",
    ),
    ("settings.sites", "Sites", "Сайты"),
    ("settings.forms", "Forms", "Формы"),
    ("settings.name", "Name", "Название"),
    ("settings.origins", "Origins", "Адреса сайта"),
    ("settings.embed", "Embed code", "Код для вставки"),
    ("settings.copy", "Copy", "Копировать"),
    ("settings.no_sites", "No sites yet", "Сайтов пока нет"),
    ("settings.no_forms", "No forms yet", "Форм пока нет"),
    ("settings.add_site", "Add site", "Добавить сайт"),
    ("settings.add_form", "Add form", "Добавить форму"),
    ("settings.site", "Site", "Сайт"),
    ("settings.no_site", "No site", "Без сайта"),
    ("settings.thank_you", "Thank-you page URL", "Адрес страницы «Спасибо»"),
    (
        "settings.scoring_intro",
        "The model as JSON: rules, decay half-life and thresholds. Saving checks every rule and re-scores every lead.",
        "Модель в формате JSON: правила, период полураспада и пороги. При сохранении каждое правило проверяется, а все лиды пересчитываются.",
    ),
    ("settings.model", "Model", "Модель"),
    ("settings.model_help", "A rule with a problem is named in the message above.", "Правило с ошибкой будет названо в сообщении выше."),
    (
        "settings.workflow_intro",
        "Each setting is JSON and is checked before it is saved.",
        "Каждая настройка — JSON; перед сохранением она проверяется.",
    ),
    ("settings.assignment_rules", "Assignment rules", "Правила распределения"),
    (
        "settings.assignment_rules_help",
        "Ordered; the first rule whose condition matches chooses the manager by its strategy.",
        "По порядку; первое подходящее правило выбирает менеджера своей стратегией.",
    ),
    ("settings.slas", "First-touch SLAs", "Сроки первого касания (SLA)"),
    (
        "settings.slas_help",
        "Seconds to the first touch by channel and temperature, counted in working hours.",
        "Секунды до первого касания по каналу и температуре, в рабочем времени.",
    ),
    ("settings.calendar", "Company calendar", "Календарь компании"),
    (
        "settings.calendar_help",
        "Time zone, working hours per weekday and holidays.",
        "Часовой пояс, рабочие часы по дням недели и праздники.",
    ),
    ("settings.completeness", "Required card fields", "Обязательные поля карточки"),
    (
        "settings.completeness_help",
        "Fields counted for a lead's and a client's card completeness.",
        "Поля, по которым считается заполненность карточки лида и клиента.",
    ),
    ("settings.scripts", "Conversation scripts", "Скрипты разговора"),
    (
        "settings.scripts_help",
        "Each with an optional segment, channel and state; the first that matches a lead is shown on its card.",
        "У каждого можно указать сегмент, канал и статус; на карточке показывается первый подходящий.",
    ),
    (
        "settings.reasons_help",
        "One reason per line: code | English | Русский. A removed reason stays on the leads that have it.",
        "Одна причина на строку: код | English | Русский. Удалённая причина остаётся у лидов, где она указана.",
    ),
    ("settings.reasons_refused", "Refusal reasons", "Причины отказа"),
    ("settings.reasons_junk", "Junk reasons", "Причины нецелевых"),
    ("settings.role", "Role", "Роль"),
    ("settings.level", "Level", "Уровень"),
    ("settings.team", "Team", "Команда"),
    ("settings.capacity", "Capacity", "Лимит лидов"),
    ("settings.on_duty", "On duty now", "Сейчас на смене"),
    ("settings.timezone", "Time zone", "Часовой пояс"),
    ("settings.language", "Language", "Язык"),
    ("settings.industries", "Industries", "Отрасли"),
    ("settings.regions", "Regions", "Регионы"),
    ("settings.segments", "Segments", "Сегменты"),
    ("settings.add_user", "Add user", "Добавить пользователя"),
    ("settings.new_password", "New password", "Новый пароль"),
    ("settings.active", "Active", "Активен"),
    ("settings.hours", "Working hours", "Рабочие часы"),
    ("settings.days_off", "Days off", "Выходные дни"),
    ("settings.vacations", "Vacations", "Отпуска"),
    ("settings.scopes", "Scopes", "Права"),
    ("settings.user", "User", "Пользователь"),
    ("settings.system_token", "System token (no user)", "Системный токен (без пользователя)"),
    ("settings.add_token", "Create token", "Создать токен"),
    ("settings.token_once", "Copy the token now: it is shown only once.", "Скопируйте токен сейчас: он показывается только один раз."),
    ("settings.revoke", "Revoke", "Отозвать"),
    (
        "settings.revoke_confirm",
        "Revoke this token? Programs using it stop working.",
        "Отозвать токен? Программы, которые им пользуются, перестанут работать.",
    ),
    ("settings.revoked", "revoked", "отозван"),
    ("role.admin", "Administrator", "Администратор"),
    ("role.head_of_sales", "Head of sales", "Руководитель продаж"),
    ("role.manager", "Manager", "Менеджер"),
    ("role.telemarketer", "Telemarketer", "Телемаркетолог"),
    ("role.marketer", "Marketer", "Маркетолог"),
    ("level.junior", "junior", "младший"),
    ("level.senior", "senior", "старший"),
    ("day.mon", "Monday", "Понедельник"),
    ("day.tue", "Tuesday", "Вторник"),
    ("day.wed", "Wednesday", "Среда"),
    ("day.thu", "Thursday", "Четверг"),
    ("day.fri", "Friday", "Пятница"),
    ("day.sat", "Saturday", "Суббота"),
    ("day.sun", "Sunday", "Воскресенье"),
    // the hosted form
    ("form.name", "Your name", "Ваше имя"),
    ("form.phone", "Phone", "Телефон"),
    ("form.company", "Company", "Компания"),
    ("form.message", "Message", "Сообщение"),
    ("form.send", "Send", "Отправить"),
    ("form.unknown", "No such form", "Такой формы нет"),
];

static MAP: LazyLock<HashMap<&'static str, (&'static str, &'static str)>> =
    LazyLock::new(|| TEXTS.iter().map(|(k, en, ru)| (*k, (*en, *ru))).collect());

/// The texts of one language.
#[derive(Debug, Clone, Copy)]
pub struct Tr(pub Lang);

impl Tr {
    /// The text of `key`; the key itself marks a missing text (the tests forbid that).
    pub fn get(&self, key: &str) -> &'static str {
        match MAP.get(key) {
            Some((en, ru)) => match self.0 {
                Lang::En => en,
                Lang::Ru => ru,
            },
            None => {
                tracing::debug!(key, "missing UI text");
                "…"
            }
        }
    }

    /// The text of `key`, or `fallback` for codes without a text (custom channels, events).
    pub fn get_or(&self, key: &str, fallback: &str) -> String {
        if MAP.contains_key(key) { self.get(key).to_string() } else { fallback.to_string() }
    }

    pub fn channel(&self, code: &str) -> String {
        self.get_or(&format!("channel.{code}"), code)
    }

    /// A state-change reason: a code from the reason lists, or one of the system's own.
    pub fn reason_label(&self, code: &str) -> String {
        self.get_or(&format!("reason.{code}"), code)
    }
}

/// The key of a flash message named in a URL, when it is one of ours.
pub fn flash_key(name: &str) -> Option<&'static str> {
    let key = format!("flash.{name}");
    MAP.get_key_value(key.as_str()).map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_text_has_both_languages_and_no_key_twice() {
        let mut seen = HashSet::new();
        for (k, en, ru) in TEXTS {
            assert!(seen.insert(*k), "{k} twice");
            assert!(!en.trim().is_empty() && !ru.trim().is_empty(), "{k} lacks a language");
        }
    }

    /// Keys written literally in templates and pages, and the families built at run time.
    #[test]
    fn every_key_used_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates/ui", "src/ui"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                files.push(e.unwrap().path());
            }
        }
        let mut used = HashSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for pat in ["c.t(\"", "t.get(\"", "c.flash = Some(\""] {
                for part in text.split(pat).skip(1) {
                    if let Some(end) = part.find('"') {
                        used.insert(part[..end].to_string());
                    }
                }
            }
        }
        assert!(used.len() > 150, "found only {} keys: is the scan broken?", used.len());
        let missing: Vec<_> = used.iter().filter(|k| !MAP.contains_key(k.as_str())).collect();
        assert!(missing.is_empty(), "keys without texts: {missing:?}");
        let families: Vec<String> = voronka_domain::LeadStatus::ALL
            .iter()
            .map(|s| format!("status.{}", s.as_str()))
            .chain(["hot", "warm", "cold"].iter().map(|t| format!("temp.{t}")))
            .chain(CHANNELS.iter().map(|c| format!("channel.{c}")))
            .chain(voronka_store::users::ROLES.iter().map(|r| format!("role.{r}")))
            .chain(voronka_store::users::LEVELS.iter().map(|l| format!("level.{l}")))
            .chain(voronka_store::workflow::TASK_KINDS.iter().map(|k| format!("task.{k}")))
            .chain(voronka_store::workflow::ACTIVITY_KINDS.iter().map(|k| format!("activity.{k}")))
            .chain(crate::api::workflow::SETTINGS.iter().flat_map(|k| [format!("settings.{k}"), format!("settings.{k}_help")]))
            .chain(["mon", "tue", "wed", "thu", "fri", "sat", "sun"].iter().map(|d| format!("day.{d}")))
            .collect();
        let missing: Vec<_> = families.iter().filter(|k| !MAP.contains_key(k.as_str())).collect();
        assert!(missing.is_empty(), "keys without texts: {missing:?}");
    }

    #[test]
    fn flash_keys_are_only_ours() {
        assert_eq!(flash_key("task_done"), Some("flash.task_done"));
        assert_eq!(flash_key("<script>"), None);
        assert_eq!(Tr(Lang::Ru).get("nav.inbox"), "Входящие");
        assert_eq!(Tr(Lang::En).channel("my_custom"), "my_custom");
    }
}
