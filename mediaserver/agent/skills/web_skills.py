"""Skills that ask web APIs: ``joke`` (API Ninjas), ``weather_api``
(WeatherAPI.com), ``wikipedia_search`` (the MediaWiki API) and ``web_search``
(Google Programmable Search).

Each talks the service's real request and response format, through httpx
with a timeout; a missing API key is a `SkillError` naming it when the skill is
added. ``base_url`` (an extension of ours) points a skill at another server
speaking the same API: a proxy, a mirror, or a test's local server. The joke
and weather skills are DataMap tools, as in the SDK; the searches are Python
tools (they need two requests, or a result list read into prose).
"""

from __future__ import annotations

from typing import Any

import httpx

from mediaserver.agent.result import SwaigFunctionResult
from mediaserver.agent.skills import SkillBase, SkillError

__all__ = ["JokeSkill", "WeatherApiSkill", "WebSearchSkill", "WikipediaSearchSkill"]

#: Seconds for one request to a skill's API.
TIMEOUT = 8.0


def _base(skill: SkillBase, default: str) -> str:
    return str(skill.params.get("base_url") or default).rstrip("/")


class JokeSkill(SkillBase):
    """`get_joke(type)`: a joke or a dad joke from API Ninjas (key: ``api_key``)."""

    SKILL_NAME = "joke"
    SKILL_DESCRIPTION = "Tell jokes using the API Ninjas joke API"

    def setup(self) -> bool:
        self.require_params("api_key")
        self.tool_name = str(self.params.get("tool_name") or "get_joke")
        return True

    def register_tools(self) -> None:
        base = _base(self, "https://api.api-ninjas.com")
        self.agent.register_swaig_function(
            {
                **self.swaig_fields,
                "function": self.tool_name,
                "description": "Get a random joke from API Ninjas",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "type": {
                            "type": "string",
                            "description": "Type of joke to get",
                            "enum": ["jokes", "dadjokes"],
                        }
                    },
                    "required": ["type"],
                },
                "data_map": {
                    "webhooks": [
                        {
                            "url": base + "/v1/${args.type}",
                            "method": "GET",
                            "headers": {"X-Api-Key": str(self.params["api_key"])},
                            "output": {"response": "Here's a joke: ${array[0].joke}"},
                            "error_keys": ["error"],
                        }
                    ],
                    "output": {
                        "response": "Sorry, there is a problem with the joke service right now."
                    },
                },
            }
        )

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return [
            {
                "title": "Joke Telling",
                "body": "You can tell jokes when the caller asks for one.",
                "bullets": [f"Use {self.tool_name} with type 'jokes' or 'dadjokes'"],
            }
        ]


class WeatherApiSkill(SkillBase):
    """`get_weather(location)` from WeatherAPI.com's current conditions (key:
    ``api_key``; ``temperature_unit`` fahrenheit or celsius)."""

    SKILL_NAME = "weather_api"
    SKILL_DESCRIPTION = "Get current weather information from WeatherAPI.com"

    def setup(self) -> bool:
        self.require_params("api_key")
        self.tool_name = str(self.params.get("tool_name") or "get_weather")
        unit = str(self.params.get("temperature_unit") or "fahrenheit").lower()
        if unit not in ("fahrenheit", "celsius"):
            raise SkillError("skill 'weather_api': temperature_unit is fahrenheit or celsius")
        self.unit = unit
        return True

    def register_tools(self) -> None:
        short = "f" if self.unit == "fahrenheit" else "c"
        speed = "mph" if short == "f" else "kph"
        speed_words = "miles" if short == "f" else "kilometres"
        text = (
            "Weather in ${location.name}: ${current.condition.text}, "
            f"${{current.temp_{short}}} degrees {self.unit.capitalize()}, "
            f"feels like ${{current.feelslike_{short}}}. "
            f"Wind ${{current.wind_dir}} at ${{current.wind_{speed}}} {speed_words} per hour, "
            "cloud cover ${current.cloud} percent."
        )
        base = _base(self, "https://api.weatherapi.com")
        key = str(self.params["api_key"])
        self.agent.register_swaig_function(
            {
                **self.swaig_fields,
                "function": self.tool_name,
                "description": "Get current weather information for any location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {
                            "type": "string",
                            "description": "The city, state, country or place",
                        }
                    },
                    "required": ["location"],
                },
                "data_map": {
                    "webhooks": [
                        {
                            "url": f"{base}/v1/current.json?key={key}"
                            "&q=${lc:enc:args.location}&aqi=no",
                            "method": "GET",
                            "output": {"response": text},
                        }
                    ],
                    "error_keys": ["error"],
                    "output": {
                        "response": "Sorry, I cannot get weather information right now. "
                        "Please check the location name or try again later."
                    },
                },
            }
        )


class WikipediaSearchSkill(SkillBase):
    """`search_wiki(query)`: the introduction of the best matching articles."""

    SKILL_NAME = "wikipedia_search"
    SKILL_DESCRIPTION = "Search Wikipedia for information about a topic"

    def setup(self) -> bool:
        self.num_results = max(1, int(self.params.get("num_results", 1)))
        self.no_results = str(
            self.params.get("no_results_message")
            or "I couldn't find any Wikipedia articles for '{query}'. "
            "Try rephrasing your search or using different keywords."
        )
        return True

    def register_tools(self) -> None:
        self.define_tool(
            name="search_wiki",
            description="Search Wikipedia for information about a topic and get article summaries",
            parameters={
                "query": {"type": "string", "description": "The search term or topic to look up"}
            },
            handler=self._search,
        )

    async def _search(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        query = str(args.get("query") or "").strip()
        if not query:
            return SwaigFunctionResult("Please tell me what to search Wikipedia for.")
        api = _base(self, "https://en.wikipedia.org") + "/w/api.php"
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                found = await client.get(
                    api,
                    params={
                        "action": "query",
                        "list": "search",
                        "format": "json",
                        "srsearch": query,
                        "srlimit": self.num_results,
                    },
                )
                found.raise_for_status()
                titles = [r["title"] for r in found.json()["query"]["search"]]
                articles = []
                for title in titles[: self.num_results]:
                    page = await client.get(
                        api,
                        params={
                            "action": "query",
                            "prop": "extracts",
                            "exintro": 1,
                            "explaintext": 1,
                            "format": "json",
                            "titles": title,
                        },
                    )
                    page.raise_for_status()
                    for data in page.json()["query"]["pages"].values():
                        extract = str(data.get("extract") or "").strip()
                        if extract:
                            articles.append(f"**{title}**\n\n{extract}")
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            return SwaigFunctionResult(f"Error searching Wikipedia: {type(exc).__name__}: {exc}")
        if not articles:
            return SwaigFunctionResult(self.no_results.format(query=query))
        return SwaigFunctionResult("\n\n" + "=" * 50 + "\n\n".join(articles))

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return [
            {
                "title": "Wikipedia Search",
                "body": "You can look up facts on Wikipedia with search_wiki.",
                "bullets": ["Use search_wiki for facts about people, places and things"],
            }
        ]


class WebSearchSkill(SkillBase):
    """`web_search(query)` through Google Programmable Search (``api_key``,
    ``search_engine_id``); the answer lists each result's title, address and
    snippet. Several instances may be added (``tool_name``)."""

    SKILL_NAME = "web_search"
    SKILL_DESCRIPTION = "Search the web for information using Google Custom Search API"
    SUPPORTS_MULTIPLE_INSTANCES = True

    def get_instance_key(self) -> str:
        engine = self.params.get("search_engine_id", "default")
        return f"{self.SKILL_NAME}_{engine}_{self.params.get('tool_name', 'web_search')}"

    def setup(self) -> bool:
        self.require_params("api_key", "search_engine_id")
        self.tool_name = str(self.params.get("tool_name") or "web_search")
        self.num_results = max(1, min(10, int(self.params.get("num_results", 3))))
        self.no_results = str(
            self.params.get("no_results_message")
            or "I couldn't find any results for '{query}'. Try rephrasing your search."
        )
        return True

    def register_tools(self) -> None:
        self.define_tool(
            name=self.tool_name,
            description="Search the web for information on any topic",
            parameters={"query": {"type": "string", "description": "The search query"}},
            handler=self._search,
        )

    async def _search(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        query = str(args.get("query") or "").strip()
        if not query:
            return SwaigFunctionResult("Please tell me what to search for.")
        url = _base(self, "https://www.googleapis.com") + "/customsearch/v1"
        params: dict[str, str | int] = {
            "key": str(self.params["api_key"]),
            "cx": str(self.params["search_engine_id"]),
            "q": query,
            "num": self.num_results,
        }
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                response = await client.get(url, params=params)
                response.raise_for_status()
                items = response.json().get("items") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return SwaigFunctionResult(f"Error searching the web: {type(exc).__name__}")
        if not items:
            return SwaigFunctionResult(self.no_results.format(query=query))
        lines = [f"I found {len(items)} results for '{query}':"]
        for n, item in enumerate(items[: self.num_results], 1):
            lines.append(
                f"{n}. {item.get('title', '')} ({item.get('link', '')}): {item.get('snippet', '')}"
            )
        return SwaigFunctionResult("\n".join(lines))

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return [
            {
                "title": "Web Search Capability",
                "body": f"You can search the internet with the {self.tool_name} tool.",
                "bullets": [f"Use {self.tool_name} when the caller asks about current events"],
            }
        ]
