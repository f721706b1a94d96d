"""SignalWire Agents SDK names this package does not build: each fails with an
error naming it (or, for options about hosting the SDK's web service, is
accepted and logged once), so a ported agent never loses a feature silently.
docs/agents.md has the whole table."""

from __future__ import annotations

__all__ = ["AGENT_LENIENT", "AGENT_UNSUPPORTED", "RESULT_UNSUPPORTED"]

#: AgentBase options about the SWML web service and its document: nothing to do here.
AGENT_LENIENT = frozenset("""
    setup_graceful_shutdown enable_debug_routes enable_debug_events manual_set_proxy_url
    add_swaig_query_params clear_swaig_query_params set_web_hook_url add_answer_verb
    add_pre_answer_verb add_post_answer_verb add_post_ai_verb clear_pre_answer_verbs
    clear_post_answer_verbs clear_post_ai_verbs
""".split())  # fmt: skip  # noqa: SIM905

#: AgentBase methods not built yet.
AGENT_UNSUPPORTED = frozenset("""
    add_function_include set_function_includes
    set_native_functions set_languages
    add_internal_filler set_internal_fillers set_prompt_llm_params set_post_prompt_llm_params
    set_prompt_pom on_function_call on_request on_swml_request get_app as_router
    handle_serverless_request register_routing_callback register_sip_username
    auto_map_sip_usernames enable_sip_routing validate_basic_auth get_basic_auth_credentials
    get_full_url validate_tool_token on_debug_event define_tools
""".split())  # fmt: skip  # noqa: SIM905

#: SwaigFunctionResult actions not built (send_sms: no SMS on a SIP media
#: server; payments, conferences, taps, RPC, raw SWML).
RESULT_UNSUPPORTED = frozenset("""
    send_sms pay create_payment_action create_payment_parameter create_payment_prompt
    join_conference join_room tap stop_tap execute_rpc rpc_dial rpc_ai_message rpc_ai_unhold
    execute_swml swml_transfer swml_user_event sip_refer switch_context add_dynamic_hints
    clear_dynamic_hints enable_extensive_data
    enable_functions_on_timeout replace_in_history remove_metadata set_speech_event_timeout
    update_settings
""".split())  # fmt: skip  # noqa: SIM905
